import ELF

/// Why two files could not be compared, or why their difference makes no bundle.
public enum ObjectDiffError: Error, CustomStringConvertible, Sendable {
    case elf(ELFError)
    case runtimeSites(RuntimeSitesError)
    /// The two files cannot be compared function by function (machine, file kind, no symbols).
    case incompatible(original: String, patched: String, reason: String)
    case disassembler(file: String, reason: String)
    /// `bundle()`: some differences cannot be made in place; each entry names where and why.
    case notApplicable(original: String, patched: String, reasons: [String])
    /// `bundle()`: the files do not differ in any way a bundle could carry.
    case nothingToPatch(original: String, patched: String)

    public var description: String {
        switch self {
        case .elf(let error): return error.description
        case .runtimeSites(let error): return error.description
        case let .incompatible(original, patched, reason):
            return "\(original) and \(patched) cannot be compared: \(reason)"
        case let .disassembler(file, reason):
            return "\(file): cannot disassemble: \(reason)"
        case let .notApplicable(original, patched, reasons):
            return "\(original) → \(patched): not applicable in place:\n" + reasons.map { "  " + $0 }.joined(separator: "\n")
        case let .nothingToPatch(original, patched):
            return "\(original) → \(patched): no difference to patch (the functions' code and string literals are equal)"
        }
    }
}
