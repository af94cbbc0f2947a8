# Benchmark workloads.
# leaf(x) = x + 1, with a frame (the common shape of a probed function).
leaf:
    push rbp
    mov rbp, rsp
    lea rax, [rdi + 1]
    pop rbp
    ret

# leaf_loop(n): calls leaf n times; returns the sum of the results.
leaf_loop:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    xor r12d, r12d
.again:
    test rbx, rbx
    jz .out
    mov rdi, rbx
    call leaf
    add r12, rax
    dec rbx
    jmp .again
.out:
    mov rax, r12
    pop r12
    pop rbx
    pop rbp
    ret

# deep(d): recursion d frames deep, then one call of leaf at the bottom; returns d.
deep:
    push rbp
    mov rbp, rsp
    test rdi, rdi
    jz .bottom
    dec rdi
    call deep
    inc rax
    pop rbp
    ret
.bottom:
    xor eax, eax
    pop rbp
    ret

# deep_loop(d, n): n times deep(d); returns n * d.
deep_loop:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov r12, rdi
    mov rbx, rsi
    xor r13d, r13d
.again:
    test rbx, rbx
    jz .out
    mov rdi, r12
    call deep
    add r13, rax
    dec rbx
    jmp .again
.out:
    mov rax, r13
    add rsp, 8
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
