# setjmp/longjmp (the regression suite): a jmp_buf of the callee-saved registers,
# the stack pointer and the return address (rbx, rbp, r12, r13, r14, r15, rsp,
# rip; 8 bytes each). The frames a longjmp skips never return.

# rj_setjmp(buf): 0 now; the value given to rj_longjmp(buf, v) later.
rj_setjmp:
    mov [rdi], rbx
    mov [rdi + 8], rbp
    mov [rdi + 16], r12
    mov [rdi + 24], r13
    mov [rdi + 32], r14
    mov [rdi + 40], r15
    lea rdx, [rsp + 8]
    mov [rdi + 48], rdx
    mov rdx, [rsp]
    mov [rdi + 56], rdx
    xor eax, eax
    ret

# rj_longjmp(buf, v): back into rj_setjmp's caller, which sees v (1 if v == 0).
rj_longjmp:
    push rbp
    mov rbp, rsp
    mov rax, rsi
    test rax, rax
    jnz .go
    mov eax, 1
.go:
    mov rbx, [rdi]
    mov rbp, [rdi + 8]
    mov r12, [rdi + 16]
    mov r13, [rdi + 24]
    mov r14, [rdi + 32]
    mov r15, [rdi + 40]
    mov rsp, [rdi + 48]
    jmp qword ptr [rdi + 56]

# rj_leaf(buf, acc): longjmp(buf, acc + 1); never returns.
rj_leaf:
    push rbp
    mov rbp, rsp
    add rsi, 1
    call rj_longjmp
    pop rbp
    ret

# rj_dive(n, buf, acc): n + 1 nested frames (acc += n each), then rj_leaf(buf, acc).
rj_dive:
    push rbp
    mov rbp, rsp
    add rdx, rdi
    test rdi, rdi
    jz .bottom
    dec rdi
    call rj_dive
    pop rbp
    ret
.bottom:
    mov rdi, rsi
    mov rsi, rdx
    call rj_leaf
    pop rbp
    ret

# rj_run(n) = 1 + n(n+1)/2, delivered by a longjmp from n + 3 frames down
# (rj_dive(n) .. rj_dive(0), rj_leaf, rj_longjmp); the jmp_buf is on its stack.
rj_run:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 72
    mov rbx, rdi
    mov rdi, rsp
    call rj_setjmp
    test rax, rax
    jnz .back
    mov rdi, rbx
    mov rsi, rsp
    xor edx, edx
    call rj_dive
    mov rax, -1
.back:
    add rsp, 72
    pop rbx
    pop rbp
    ret

# rj_loop(k, n) = k * rj_run(n): k longjmps, each from the same depth.
rj_loop:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    xor r13, r13
.again:
    test rbx, rbx
    jz .out
    mov rdi, r12
    call rj_run
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
