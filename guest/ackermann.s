# ackermann(m, n): the doubly recursive Ackermann-Peter function.
ackermann:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    mov r12, rsi
    test rbx, rbx
    jnz .m_pos
    lea rax, [r12 + 1]
    jmp .done
.m_pos:
    test r12, r12
    jnz .both_pos
    lea rdi, [rbx - 1]
    mov esi, 1
    call ackermann
    jmp .done
.both_pos:
    mov rdi, rbx
    lea rsi, [r12 - 1]
    call ackermann
    lea rdi, [rbx - 1]
    mov rsi, rax
    call ackermann
.done:
    pop r12
    pop rbx
    pop rbp
    ret
