# fib(n): recursive Fibonacci with a frame pointer (System V AMD64).
fib:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdi
    cmp rdi, 2
    jl .small
    lea rdi, [rbx - 1]
    call fib
    mov [rsp], rax
    lea rdi, [rbx - 2]
    call fib
    add rax, [rsp]
    jmp .done
.small:
    mov rax, rdi
.done:
    add rsp, 8
    pop rbx
    pop rbp
    ret

# fib_loop(n, k): calls fib(n) k times, returns the sum of the results.
fib_loop:
    push rbp
    mov rbp, rsp
    push r12
    push r13
    push r14
    sub rsp, 8
    mov r12, rdi
    mov r13, rsi
    xor r14, r14
.again:
    test r13, r13
    jz .out
    mov rdi, r12
    call fib
    add r14, rax
    dec r13
    jmp .again
.out:
    mov rax, r14
    add rsp, 8
    pop r14
    pop r13
    pop r12
    pop rbp
    ret
