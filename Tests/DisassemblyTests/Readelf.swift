import Foundation
import TestSupport

/// GNU readelf as the oracle for symbols, sections and relocations (until tests use the ELF module).
enum Readelf {
    struct Symbol { var name: String; var value: UInt64; var size: UInt64; var section: Int; var type: String }
    struct Section { var index: Int; var name: String; var address: UInt64; var offset: UInt64; var size: UInt64 }

    static func symbols(in file: URL) throws -> [Symbol] {
        try Fixtures.check("readelf", ["-sW", file.path]).split(separator: "\n").compactMap { line in
            // "  2814: 0000000000009260   122 FUNC    GLOBAL DEFAULT    3 nfs_flock"
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 8, f[0].hasSuffix(":"), let value = UInt64(f[1], radix: 16),
                  let section = Int(f[6]) else { return nil }
            let size = f[2].hasPrefix("0x") ? UInt64(f[2].dropFirst(2), radix: 16) : UInt64(f[2])
            return Symbol(name: String(f[7]), value: value, size: size ?? 0, section: section, type: String(f[3]))
        }
    }

    static func symbol(_ name: String, in file: URL) throws -> Symbol {
        let matches = try symbols(in: file).filter { $0.name == name }
        guard matches.count == 1 else { throw Fixtures.Failure("readelf: \(matches.count) symbols named \(name) in \(file.path)") }
        return matches[0]
    }

    static func sections(in file: URL) throws -> [Section] {
        try Fixtures.check("readelf", ["-SW", file.path]).split(separator: "\n").compactMap { line in
            // "  [ 3] .text             PROGBITS        0000000000000000 0000a0 02a2b0 00  AX  0   0 16"
            guard let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]"),
                  let index = Int(line[line.index(after: open)..<close].trimmingCharacters(in: .whitespaces)) else { return nil }
            let f = line[line.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 5, let address = UInt64(f[2], radix: 16), let offset = UInt64(f[3], radix: 16),
                  let size = UInt64(f[4], radix: 16) else { return nil }
            return Section(index: index, name: String(f[0]), address: address, offset: offset, size: size)
        }
    }

    static func section(_ name: String, in file: URL) throws -> Section {
        guard let section = try sections(in: file).first(where: { $0.name == name }) else {
            throw Fixtures.Failure("readelf: no section \(name) in \(file.path)")
        }
        return section
    }

    /// The relocations of one RELA section as objdump -r writes them after the address:
    /// `R_X86_64_PLT32\t__fentry__-0x4`, keyed by the field's offset.
    static func relocations(_ relocationSection: String, in file: URL) throws -> [UInt64: [String]] {
        let text = try Fixtures.check("readelf", ["-rW", file.path])
        var result: [UInt64: [String]] = [:]
        var inside = false
        for line in text.split(separator: "\n") {
            if line.hasPrefix("Relocation section") {
                inside = line.contains("'\(relocationSection)'")
                continue
            }
            guard inside else { continue }
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 3, let offset = UInt64(f[0], radix: 16), f[2].hasPrefix("R_") else { continue }
            var name = "*ABS*"
            var addend: Int64 = 0
            if f.count >= 7 {
                name = String(f[4])
                let magnitude = Int64(f[6], radix: 16) ?? 0
                addend = f[5] == "-" ? -magnitude : magnitude
            } else if f.count == 4 {
                let value = f[3]
                addend = value.hasPrefix("-") ? -(Int64(value.dropFirst(), radix: 16) ?? 0) : Int64(value, radix: 16) ?? 0
            }
            let addendText = addend == 0 ? "" : (addend < 0 ? "-0x" + String(-addend, radix: 16) : "+0x" + String(addend, radix: 16))
            result[offset, default: []].append("\(f[2])\t\(name)\(addendText)")
        }
        return result
    }
}
