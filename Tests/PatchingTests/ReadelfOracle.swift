import Foundation
import TestSupport

/// What `readelf -rW` and `objdump -d` say about a file: the independent oracle the runtime-site and
/// diff tests compare against.
struct ReadelfOracle {
    struct Entry {
        var offset: UInt64
        var type: String
        var symbolValue: UInt64
        var symbol: String
        var addend: Int64
        /// S + A: where a table entry points (section-relative in a relocatable file).
        var target: Int64 { Int64(bitPattern: symbolValue) &+ addend }
    }

    /// Relocation section name (`.rela.text`) → its entries, in file order.
    let relocations: [String: [Entry]]

    init(_ path: String) throws {
        let text = try Fixtures.check("readelf", ["-rW", path])
        var result: [String: [Entry]] = [:]
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("Relocation section '") {
                let name = line.dropFirst("Relocation section '".count).prefix { $0 != "'" }
                current = String(name)
                result[current!] = []
                continue
            }
            guard let section = current else { continue }
            // 0000000000000000  0000000100000001 R_X86_64_64   0000000000000000 .text + 20
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3, let offset = UInt64(fields[0], radix: 16), fields[2].hasPrefix("R_") else { continue }
            var entry = Entry(offset: offset, type: String(fields[2]), symbolValue: 0, symbol: "", addend: 0)
            if fields.count >= 7 {
                entry.symbolValue = UInt64(fields[3], radix: 16) ?? 0
                entry.symbol = String(fields[4])
                let magnitude = Int64(fields[6], radix: 16) ?? 0
                entry.addend = fields[5] == "-" ? -magnitude : magnitude
            } else if fields.count == 4 {
                entry.addend = Int64(fields[3], radix: 16) ?? 0     // no symbol: just the addend
            }
            result[section, default: []].append(entry)
        }
        relocations = result
    }

    /// Bytes a relocation type writes, for the types kernel objects use.
    static func fieldSize(_ type: String) -> Int {
        switch type {
        case "R_X86_64_64", "R_X86_64_PC64": return 8
        case "R_X86_64_NONE": return 0
        default: return 4
        }
    }

    /// Contents of a section as `readelf -x` prints them (relocations not applied).
    static func hexDump(_ path: String, section: String) throws -> [UInt8] {
        let text = try Fixtures.check("readelf", ["-x", section, path])
        var bytes: [UInt8] = []
        for line in text.split(separator: "\n") where line.hasPrefix("  0x") {
            // "  0x00000000 00000000 00000000 10020a0a 00000000 ................"
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            for word in fields.dropFirst().prefix(4) where word.count % 2 == 0 && word.allSatisfy(\.isHexDigit) {
                var i = word.startIndex
                while i < word.endIndex {
                    let next = word.index(i, offsetBy: 2)
                    bytes.append(UInt8(word[i..<next], radix: 16)!)
                    i = next
                }
            }
        }
        return bytes
    }

    /// Instruction start → length for one section, from `objdump -d` (wide enough that no
    /// instruction wraps onto a second line).
    static func instructionLengths(_ path: String, section: String) throws -> [UInt64: Int] {
        let text = try Fixtures.check("objdump", ["-d", "--insn-width=16", "-j", section, path])
        var result: [UInt64: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard parts.count >= 3, parts[0].hasSuffix(":"),
                  let address = UInt64(parts[0].dropLast().trimmingCharacters(in: .whitespaces), radix: 16) else { continue }
            result[address] = parts[1].split(separator: " ").count
        }
        return result
    }
}
