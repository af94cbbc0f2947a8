# Tail calls (the regression suite): functions that leave by `jmp` to another
# function, which then returns straight to the first one's caller through the
# return-address slot the first one was called with.

# tail_outer(n) = tail_inner(n + 1): a frame set up and torn down, then `jmp`.
tail_outer:
    push rbp
    mov rbp, rsp
    add rdi, 1
    pop rbp
    jmp tail_inner

# tail_inner(n) = 2n.
tail_inner:
    push rbp
    mov rbp, rsp
    lea rax, [rdi + rdi]
    pop rbp
    ret

# tail_count(n, acc): n == 0 -> acc, else tail_count(n - 1, acc + n) by `jmp`:
# n + 1 entries, one return.
tail_count:
    push rbp
    mov rbp, rsp
    test rdi, rdi
    jz .done
    add rsi, rdi
    dec rdi
    pop rbp
    jmp tail_count
.done:
    mov rax, rsi
    pop rbp
    ret

# tail_driver(n) = tail_outer(n) + tail_count(n, 0), from a frame of its own.
tail_driver:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    call tail_outer
    mov r12, rax
    mov rdi, rbx
    xor esi, esi
    call tail_count
    add rax, r12
    pop r12
    pop rbx
    pop rbp
    ret
