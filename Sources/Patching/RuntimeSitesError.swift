import ELF

/// Why the runtime-rewritten sites of a file could not be listed.
public enum RuntimeSitesError: Error, CustomStringConvertible, Sendable, Hashable {
    /// Reading the ELF structures failed.
    case elf(ELFError)
    /// A patch-site table is inconsistent: `table` names it, `offset` is the entry's position
    /// (section offset in an object, address in a linked image).
    case malformedTable(file: String, table: String, offset: UInt64, expected: String, found: String)
    /// A table's bounding symbol is missing while its partner is present.
    case missingSymbol(file: String, table: String, symbol: String)

    public var description: String {
        switch self {
        case .elf(let error): return error.description
        case let .malformedTable(file, table, offset, expected, found):
            return "\(file): \(table) entry at \(Hex.address(offset)): expected \(expected), found \(found)"
        case let .missingSymbol(file, table, symbol):
            return "\(file): \(table): the symbol \(symbol) is missing while its partner is present; "
                + "expected both bounds of the table in the symbol list"
        }
    }
}
