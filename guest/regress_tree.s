# A pseudo-random call tree (the regression suite): the shape comes from a seed.

# rt_node(s, d): a leaf (d == 0) returns 1 + fib((s >> 40) & 7); an inner node
# has (s >> 33) % 3 children, child i (i = k-1 .. 0) being
# rt_node(s * 6364136223846793005 + 1442695040888963407 + i, d - 1) (64-bit
# wrap-around), and returns 1 + the sum of its children's results.
rt_node:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    push r14
    mov rbx, rdi
    mov r12, rsi
    test r12, r12
    jnz .inner
    mov rdi, rbx
    shr rdi, 40
    and rdi, 7
    call fib
    inc rax
    jmp .done
.inner:
    mov rax, rbx
    shr rax, 33
    xor edx, edx
    mov ecx, 3
    div rcx
    mov r13, rdx
    mov r14, 1
.loop:
    test r13, r13
    jz .sum
    dec r13
    mov rax, 0x5851F42D4C957F2D
    imul rax, rbx
    mov rcx, 0x14057B7EF767814F
    add rax, rcx
    add rax, r13
    mov rdi, rax
    lea rsi, [r12 - 1]
    call rt_node
    add r14, rax
    jmp .loop
.sum:
    mov rax, r14
.done:
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
