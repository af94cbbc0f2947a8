# Targets of lib/tests/test_kprobes.c (div_factor = 3), compiled by hand.
# kprobe_target(value) = value / 3
kprobe_target:
    push rbp
    mov rbp, rsp
    mov eax, edi
    xor edx, edx
    mov ecx, 3
    div ecx
    pop rbp
    ret

# kprobe_target2(value) = value / 3 + 1
kprobe_target2:
    push rbp
    mov rbp, rsp
    mov eax, edi
    xor edx, edx
    mov ecx, 3
    div ecx
    inc eax
    pop rbp
    ret

# kprobe_recursed_target(value) = value / 3
kprobe_recursed_target:
    push rbp
    mov rbp, rsp
    mov eax, edi
    xor edx, edx
    mov ecx, 3
    div ecx
    pop rbp
    ret

# rip_relative(): reads and addresses data through RIP-relative operands.
rip_relative:
    mov rax, qword ptr [rip + rip_data]
    lea rcx, [rip + rip_data]
    add rax, qword ptr [rcx + 8]
    ret

rip_data:
    .quad 40
    .quad 2

# sum8(a..h) = a + 2b + 3c + 4d + 5e + 6f + 7g + 8h: arguments 6 and 7 on the stack.
sum8:
    push rbp
    mov rbp, rsp
    mov rax, rdi
    lea rax, [rax + 2*rsi]
    imul rdx, rdx, 3
    add rax, rdx
    lea rax, [rax + 4*rcx]
    imul r8, r8, 5
    add rax, r8
    imul r9, r9, 6
    add rax, r9
    mov rdx, [rbp + 16]
    imul rdx, rdx, 7
    add rax, rdx
    mov rdx, [rbp + 24]
    lea rax, [rax + 8*rdx]
    pop rbp
    ret

# call_sum8(): sum8(1, 2, 3, 4, 5, 6, 7, 8) = 204
call_sum8:
    push rbp
    mov rbp, rsp
    push 8
    push 7
    mov edi, 1
    mov esi, 2
    mov edx, 3
    mov ecx, 4
    mov r8d, 5
    mov r9d, 6
    call sum8
    add rsp, 16
    pop rbp
    ret

# The stack-trace targets of test_kprobes.c.
# kprobe_stacktrace_internal_target(): records and returns its return address.
kprobe_stacktrace_internal_target:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rip + target_return_address]
    test rax, rax
    jnz .known
    mov rax, qword ptr [rbp + 8]
    mov qword ptr [rip + target_return_address], rax
.known:
    pop rbp
    ret

# kprobe_stacktrace_target(): records its return address, calls the internal target.
kprobe_stacktrace_target:
    push rbp
    mov rbp, rsp
    mov rax, qword ptr [rip + target_return_address + 8]
    test rax, rax
    jnz .known
    mov rax, qword ptr [rbp + 8]
    mov qword ptr [rip + target_return_address + 8], rax
.known:
    call kprobe_stacktrace_internal_target
    mov rax, qword ptr [rip + target_return_address + 8]
    pop rbp
    ret

# kprobe_stacktrace_driver(): calls the target, returns its own return address.
kprobe_stacktrace_driver:
    push rbp
    mov rbp, rsp
    call kprobe_stacktrace_target
    mov rax, qword ptr [rbp + 8]
    pop rbp
    ret

target_return_address:
    .quad 0
    .quad 0
