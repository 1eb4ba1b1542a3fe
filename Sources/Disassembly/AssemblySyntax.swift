/// How x86 instructions are written. arm64 has one syntax; the choice is ignored there.
public enum AssemblySyntax: Sendable {
    /// `movq %rax, 8(%rbx)`: objdump's default, and Suture's.
    case att
    /// `mov qword ptr [rbx + 8], rax`
    case intel
}
