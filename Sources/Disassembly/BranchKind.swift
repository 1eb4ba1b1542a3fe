/// What an instruction does to the flow of control.
public enum BranchKind: Sendable, Hashable {
    case none
    /// Unconditional direct jump (`jmp rel`, arm64 `b`).
    case jump
    /// Direct jump taken on a condition (x86 Jcc, jcxz, loop; arm64 `b.cond`, `cbz`, `tbz`, ...).
    case conditionalJump
    /// Direct call (`call rel32`, arm64 `bl`).
    case call
    /// `ret`, `iret`, `eret`, ...
    case ret
    /// Jump through a register or memory (`jmp *%rax`, arm64 `br`).
    case indirectJump
    /// Call through a register or memory (`call *%rax`, arm64 `blr`).
    case indirectCall
    /// Traps into the kernel or a handler (`int3`, `int $0x80`, `syscall`, arm64 `svc`, `brk`).
    case interrupt
}
