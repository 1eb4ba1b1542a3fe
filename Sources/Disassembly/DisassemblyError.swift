import ELF

/// Why decoding or editing machine code failed. Each message names the instruction (address, bytes,
/// mnemonic, operands) or the engine call, what was expected and what was found.
public enum DisassemblyError: Error, CustomStringConvertible, Sendable {
    /// Capstone refused to open or configure a handle (`cs_open`, `cs_option`).
    case engine(architecture: Architecture, call: String, code: UInt32, message: String)
    /// `BranchEdit` was given an instruction it cannot turn into its opposite of the same length.
    case notInvertible(instruction: Instruction, architecture: Architecture, expected: String, reason: String)

    public var description: String {
        switch self {
        case let .engine(architecture, call, code, message):
            return "Capstone \(call) failed for \(architecture.rawValue): error \(code) (\(message))"
        case let .notInvertible(instruction, architecture, expected, reason):
            return "cannot invert the branch at \(instruction.summary) (\(architecture.rawValue)): "
                + "expected \(expected), found \(reason)"
        }
    }
}
