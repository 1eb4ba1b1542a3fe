import ELF

/// The instruction sets Suture decodes. The raw value is what bundles and JSON output carry.
public enum Architecture: String, Sendable, Codable, CaseIterable {
    case x86_64
    case i386
    case arm64

    /// The architecture for an ELF `e_machine` value (EM_X86_64 62, EM_386 3, EM_AARCH64 183),
    /// or nil for machines Suture does not decode.
    public init?(elfMachine: UInt16) {
        switch elfMachine {
        case 62: self = .x86_64
        case 3: self = .i386
        case 183: self = .arm64
        default: return nil
        }
    }

    /// Whether instructions have a fixed size of 4 bytes (an undecodable word is skipped whole).
    var fixedInstructionSize: Int? { self == .arm64 ? 4 : nil }
}

extension Architecture {
    /// The architecture of an ELF file's machine, or nil for machines Suture does not decode.
    public init?(machine: Machine) {
        self.init(elfMachine: machine.rawValue)
    }
}
