# Shared-memory synchronisation for concurrent tasks (the regression suite).
# Pointers are to guest memory shared by every task of a machine.

# rs_barrier(count, n): atomically count this task in, then spin (`pause`)
# until n tasks have arrived; returns n. Every task is inside it at once.
rs_barrier:
    push rbp
    mov rbp, rsp
    lock inc qword ptr [rdi]
.spin:
    cmp qword ptr [rdi], rsi
    jge .out
    pause
    jmp .spin
.out:
    mov rax, rsi
    pop rbp
    ret

# rs_barrier_fib(count, n, k) = fib(k), computed after rs_barrier(count, n).
rs_barrier_fib:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
    mov rbx, rdx
    call rs_barrier
    mov rdi, rbx
    call fib
    add rsp, 8
    pop rbx
    pop rbp
    ret

# rs_add(racy, atomic, k): k times, *racy += 1 by a separate load and store (a
# preemption between them loses an update) and *atomic += 1 by `lock xadd`.
rs_add:
    push rbp
    mov rbp, rsp
.loop:
    test rdx, rdx
    jz .out
    mov rax, [rdi]
    add rax, 1
    mov [rdi], rax
    mov ecx, 1
    lock xadd [rsi], rcx
    dec rdx
    jmp .loop
.out:
    pop rbp
    ret

# rs_fib_barrier(count, n, k) = fib(k), computed before rs_barrier(count, n).
rs_fib_barrier:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    push r13
    sub rsp, 8
    mov rbx, rdi
    mov r12, rsi
    mov rdi, rdx
    call fib
    mov r13, rax
    mov rdi, rbx
    mov rsi, r12
    call rs_barrier
    mov rax, r13
    add rsp, 8
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
