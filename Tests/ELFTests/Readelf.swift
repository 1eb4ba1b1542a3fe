import Foundation
import TestSupport

/// readelf's view of a file, parsed from `readelf -SW / -lW / -sW / -rW / -n` text: the oracle the
/// ELF reader is compared against. Parsing is by tokens, tolerant of column widths (ELF32/ELF64).
struct Readelf {
    struct SectionRow: Equatable {
        var index: Int, name: String, type: String, address: UInt64, offset: UInt64, size: UInt64
        var entrySize: UInt64, flags: String, link: UInt32, info: UInt32, alignment: UInt64
    }
    struct SegmentRow: Equatable {
        var type: String, offset: UInt64, virtualAddress: UInt64, physicalAddress: UInt64
        var fileSize: UInt64, memorySize: UInt64, flags: String, alignment: UInt64
    }
    struct SymbolRow: Equatable {
        var index: Int, value: UInt64, size: UInt64, type: String, binding: String, visibility: String
        var sectionIndex: String, name: String
    }
    struct SymbolTable { var name: String; var rows: [SymbolRow] }
    struct RelocationRow: Equatable {
        var offset: UInt64, info: UInt64, type: String, symbolValue: UInt64?, symbolName: String?, addend: Int64?
    }
    struct RelocationTable { var name: String; var offset: UInt64; var rows: [RelocationRow] }
    struct NoteRow: Equatable { var owner: String; var size: UInt64 }

    let path: String

    init(_ path: String) { self.path = path }

    private func run(_ option: String) throws -> String {
        try Fixtures.check("readelf", [option, path])
    }

    // MARK: -hW

    /// "Class", "Type", "Machine", "Entry point address", ... → their text.
    func header() throws -> [String: String] {
        var fields: [String: String] = [:]
        for line in try run("-hW").split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].trimmingCharacters(in: .whitespaces)] =
                line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    // MARK: -SW

    func sections() throws -> [SectionRow] {
        var rows: [SectionRow] = []
        for line in try run("-SW").split(separator: "\n") {
            guard let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]"),
                  let index = Int(line[line.index(after: open)..<close].trimmingCharacters(in: .whitespaces))
            else { continue }
            let tokens = line[line.index(after: close)...].split(separator: " ").map(String.init)
            // Name, then the type (one or more words), then the address: the first token that is
            // all hex digits of the address width (8 or 16).
            guard let addressAt = tokens.indices.dropFirst().first(where: { i in
                (tokens[i].count == 8 || tokens[i].count == 16) && UInt64(tokens[i], radix: 16) != nil
            }) else { throw Fixtures.Failure("readelf -SW: no address in \(line)") }
            let name = addressAt >= 2 ? tokens[0] : ""
            let typeTokens = addressAt >= 2 ? tokens[1..<addressAt] : tokens[0..<addressAt]
            let rest = Array(tokens[(addressAt + 1)...])
            guard rest.count == 6 || rest.count == 7 else { throw Fixtures.Failure("readelf -SW: cannot parse \(line)") }
            let hasFlags = rest.count == 7
            rows.append(SectionRow(
                index: index, name: name, type: typeTokens.joined(separator: " "),
                address: try hex(tokens[addressAt]), offset: try hex(rest[0]), size: try hex(rest[1]),
                entrySize: try hex(rest[2]), flags: hasFlags ? rest[3] : "",
                link: UInt32(rest[hasFlags ? 4 : 3]) ?? .max, info: UInt32(rest[hasFlags ? 5 : 4]) ?? .max,
                alignment: UInt64(rest[hasFlags ? 6 : 5]) ?? .max))
        }
        return rows
    }

    // MARK: -lW

    func segments() throws -> [SegmentRow] {
        var rows: [SegmentRow] = []
        var inTable = false
        for line in try run("-lW").split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("Program Headers:") { inTable = true; continue }
            guard inTable else { continue }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { break }
            if trimmed.hasPrefix("Type ") || trimmed.hasPrefix("[") { continue }
            let tokens = trimmed.split(separator: " ").map(String.init)
            guard tokens.count >= 7 else { throw Fixtures.Failure("readelf -lW: cannot parse \(line)") }
            rows.append(SegmentRow(
                type: tokens[0], offset: try hex(tokens[1]), virtualAddress: try hex(tokens[2]),
                physicalAddress: try hex(tokens[3]), fileSize: try hex(tokens[4]), memorySize: try hex(tokens[5]),
                flags: tokens[6..<(tokens.count - 1)].joined(), alignment: try hex(tokens[tokens.count - 1])))
        }
        return rows
    }

    // MARK: -sW

    func symbolTables() throws -> [SymbolTable] {
        var tables: [SymbolTable] = []
        for line in try run("-sW").split(separator: "\n") {
            if line.hasPrefix("Symbol table '") {
                let name = line.dropFirst("Symbol table '".count).prefix { $0 != "'" }
                tables.append(SymbolTable(name: String(name), rows: []))
                continue
            }
            let tokens = line.split(separator: " ").map(String.init)
            guard tokens.count >= 7, tokens[0].hasSuffix(":"), let index = Int(tokens[0].dropLast()),
                  !tables.isEmpty else { continue }
            // Visibility may be followed by a bracketed st_other note: "[VARIANT_PCS]", "[<other>: 88]".
            var i = 6
            if tokens.count > i, tokens[i].hasPrefix("[") {
                while i < tokens.count, !tokens[i].hasSuffix("]") { i += 1 }
                i += 1
            }
            guard i < tokens.count else { throw Fixtures.Failure("readelf -sW: cannot parse \(line)") }
            let size = tokens[2].hasPrefix("0x") ? try hex(tokens[2]) : (UInt64(tokens[2]) ?? .max)
            let name = i + 1 < tokens.count ? tokens[(i + 1)...].joined(separator: " ") : ""
            tables[tables.count - 1].rows.append(SymbolRow(
                index: index, value: try hex(tokens[1]), size: size, type: tokens[3], binding: tokens[4],
                visibility: tokens[5], sectionIndex: tokens[i], name: name))
        }
        return tables
    }

    // MARK: -rW

    func relocationTables() throws -> [RelocationTable] {
        var tables: [RelocationTable] = []
        for line in try run("-rW").split(separator: "\n") {
            if line.hasPrefix("Relocation section '") {
                let name = String(line.dropFirst("Relocation section '".count).prefix { $0 != "'" })
                guard let at = line.range(of: "at offset 0x") else { throw Fixtures.Failure("readelf -rW: \(line)") }
                let offset = try hex(String(line[at.upperBound...].prefix { $0.isHexDigit }))
                tables.append(RelocationTable(name: name, offset: offset, rows: []))
                continue
            }
            var tokens = line.split(separator: " ").map(String.init)
            guard tokens.count >= 3, !tables.isEmpty, UInt64(tokens[0], radix: 16) != nil,
                  UInt64(tokens[1], radix: 16) != nil else { continue }
            if tokens[2] == "unrecognized:", tokens.count >= 4 {   // "unrecognized: 2e"
                tokens[2] = "unrecognized:" + tokens[3]
                tokens.remove(at: 3)
            }
            var row = RelocationRow(offset: try hex(tokens[0]), info: try hex(tokens[1]), type: tokens[2],
                                    symbolValue: nil, symbolName: nil, addend: nil)
            let rest = Array(tokens[3...])
            switch rest.count {
            case 0: break                                             // REL, no symbol
            case 1: row.addend = try signedHex(rest[0])               // RELA, no symbol
            case 2: row.symbolValue = try hex(rest[0]); row.symbolName = rest[1]   // REL with symbol
            case 3 where rest[1] == "+" || rest[1] == "-":            // RELA, symbol without a name
                row.symbolValue = try hex(rest[0]); row.symbolName = ""
                row.addend = try signedHex(rest[2]) * (rest[1] == "-" ? -1 : 1)
            case 4 where rest[2] == "+" || rest[2] == "-":
                row.symbolValue = try hex(rest[0]); row.symbolName = rest[1]
                row.addend = try signedHex(rest[3]) * (rest[2] == "-" ? -1 : 1)
            default: throw Fixtures.Failure("readelf -rW: cannot parse \(line)")
            }
            tables[tables.count - 1].rows.append(row)
        }
        return tables
    }

    // MARK: -n

    /// Every note as (owner, descriptor size), and the build-ids readelf printed.
    func notes() throws -> (notes: [NoteRow], buildIDs: [String]) {
        var notes: [NoteRow] = []
        var buildIDs: [String] = []
        for line in try run("-n").split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("Build ID:") {
                buildIDs.append(trimmed.dropFirst("Build ID:".count).trimmingCharacters(in: .whitespaces))
                continue
            }
            let tokens = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            if tokens.count >= 2, tokens[1].hasPrefix("0x"), tokens[1].count == 10, tokens[0] != "Owner",
               line.hasPrefix("  "), !line.hasPrefix("   ") {
                notes.append(NoteRow(owner: tokens[0], size: try hex(tokens[1])))
            }
        }
        return (notes, buildIDs)
    }

    // MARK: Numbers

    private func hex(_ text: String) throws -> UInt64 {
        let digits = text.hasPrefix("0x") ? String(text.dropFirst(2)) : text
        guard let value = UInt64(digits, radix: 16) else { throw Fixtures.Failure("readelf: not hex: \(text)") }
        return value
    }

    private func signedHex(_ text: String) throws -> Int64 {
        if text.hasPrefix("-") { return -Int64(bitPattern: try hex(String(text.dropFirst()))) }
        return Int64(bitPattern: try hex(text))
    }
}
