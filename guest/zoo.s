# zoo(x): one function that uses every instruction class kprobes must handle:
# RIP-relative loads and lea, call through [rip+x], relative call/jmp/jcc,
# loop and jrcxz, ret and ret imm16, push/pop (register and immediate),
# indirect call/jmp through registers and memory, nop/endbr64, and plain ALU
# instructions that run out of line.
zoo:
    endbr64
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    mov rbx, rdi
    xor r12d, r12d
    mov rax, qword ptr [rip + zoo_k]
    add r12, rax
    lea rcx, [rip + zoo_table]
    mov rax, rbx
    and eax, 1
    jmp qword ptr [rcx + rax*8]
.even:
    add r12, 2
    jmp .joined
.odd:
    add r12, 1
.joined:
    mov rdi, rbx
    call qword ptr [rip + zoo_fptr]
    add r12, rax
    lea rax, [rip + zoo_double]
    mov edi, 5
    call rax
    add r12, rax
    push 7
    call zoo_pop8
    add r12, rax
    mov ecx, 5
.lp:
    add r12, rcx
    loop .lp
    xor ecx, ecx
    jrcxz .skip
    add r12, 100000
.skip:
    cmp rbx, 10
    jg .big
    nop
    .byte 0x0f, 0x1f, 0x44, 0x00, 0x00   # nop dword ptr [rax + rax]
    inc r12
    jmp .tail
.big:
    imul r12, rbx
.tail:
    lea rdx, [rip + .land]
    jmp rdx
.land:
    xchg rax, r12
    cqo
    setz cl
    movzx ecx, cl
    add rax, rcx
    pop r12
    pop rbx
    pop rbp
    ret

# zoo_double(x) = 2x
zoo_double:
    lea rax, [rdi + rdi]
    ret

# zoo_pop8(): 3 * its stack argument, popped by the callee (ret imm16).
zoo_pop8:
    mov rax, qword ptr [rsp + 8]
    imul rax, rax, 3
    ret 8

zoo_k:
    .quad 1000
zoo_fptr:
    .quad zoo_double
zoo_table:
    .quad zoo.even
    .quad zoo.odd
