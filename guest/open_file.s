# open_file(id): an open()-like call that fails for some inputs.
#   id % 7 == 3  -> -ENOENT (-2)
#   id % 11 == 5 -> -EACCES (-13)
#   otherwise    -> a file descriptor, 3 + id % 64
# It "walks the path" first: a loop of id % 16 + 8 hashing steps.
open_file:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    mov rax, rdi
    xor edx, edx
    mov ecx, 16
    div rcx
    lea r12, [rdx + 8]
    mov rax, rbx
.walk:
    imul rax, rax, 31
    add rax, 7
    dec r12
    jnz .walk
    mov rax, rbx
    xor edx, edx
    mov ecx, 7
    div rcx
    cmp rdx, 3
    je .enoent
    mov rax, rbx
    xor edx, edx
    mov ecx, 11
    div rcx
    cmp rdx, 5
    je .eacces
    mov rax, rbx
    and rax, 63
    add rax, 3
    jmp .done
.enoent:
    mov rax, -2
    jmp .done
.eacces:
    mov rax, -13
.done:
    pop r12
    pop rbx
    pop rbp
    ret

# open_loop(n): calls open_file(0 .. n-1), returns how many calls failed.
open_loop:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov r12, rdi
    xor ebx, ebx
.next:
    test r12, r12
    jz .out
    dec r12
    mov rdi, r12
    call open_file
    test rax, rax
    jns .next
    inc rbx
    jmp .next
.out:
    mov rax, rbx
    pop r12
    pop rbx
    pop rbp
    ret
