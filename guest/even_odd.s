# is_even(n) / is_odd(n): mutual recursion, one frame per step.
is_even:
    push rbp
    mov rbp, rsp
    test rdi, rdi
    jz .yes
    dec rdi
    call is_odd
    pop rbp
    ret
.yes:
    mov eax, 1
    pop rbp
    ret

is_odd:
    push rbp
    mov rbp, rsp
    test rdi, rdi
    jz .no
    dec rdi
    call is_even
    pop rbp
    ret
.no:
    xor eax, eax
    pop rbp
    ret
