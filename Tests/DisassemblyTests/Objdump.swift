import ELF
import Foundation
import TestSupport

/// GNU objdump (binutils 2.40) as the oracle: its output parsed into plain values.
enum Objdump {
    /// One instruction line of `objdump -d -w` (all bytes on one line).
    struct Line: Sendable {
        var address: UInt64
        var bytes: [UInt8]
        /// The mnemonic with objdump's prefix words (`bnd`, `notrack`, `cs`, `lock`, ...) removed.
        var mnemonic: String
        var prefixes: [String]
        var operands: String
    }

    /// A section's raw bytes, as objcopy extracts them.
    static func sectionBytes(_ file: URL, section: String, objcopy: String = "objcopy") throws -> [UInt8] {
        let folder = try Fixtures.temporaryFolder("suture-disasm")
        defer { try? FileManager.default.removeItem(at: folder) }
        let out = folder.appendingPathComponent("section.bin")
        try Fixtures.check(objcopy, ["-O", "binary", "--only-section=\(section)", file.path, out.path])
        return [UInt8](try Data(contentsOf: out))
    }

    /// Runs objdump with its output going to a file (the kernel's .text disassembles to ~200 MB) and
    /// returns that output.
    static func output(_ arguments: [String], of file: URL) throws -> Data {
        let folder = try Fixtures.temporaryFolder("suture-objdump")
        defer { try? FileManager.default.removeItem(at: folder) }
        let out = folder.appendingPathComponent("objdump.txt")
        let quoted = (arguments + [file.path]).map { "'\($0)'" }.joined(separator: " ")
        let result = try Fixtures.run("sh", ["-c", "objdump \(quoted) > '\(out.path)'"])
        guard result.status == 0 else {
            throw Fixtures.Failure("objdump \(arguments.joined(separator: " ")) \(file.path) failed: \(result.stderr)")
        }
        return try Data(contentsOf: out, options: .alwaysMapped)
    }

    /// The start address of every instruction line (`  addr:\t...`) in objdump's output, in order.
    static func instructionAddresses(_ text: Data) -> [UInt64] {
        var result: [UInt64] = []
        result.reserveCapacity(text.count / 24)
        text.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let p = raw.bindMemory(to: UInt8.self)
            var i = 0
            let n = p.count
            while i < n {
                // At the start of a line.
                var j = i
                while j < n, p[j] == 0x20 { j += 1 }
                var value: UInt64 = 0
                var digits = 0
                while j < n, let v = hexValue(p[j]) { value = value << 4 | UInt64(v); digits += 1; j += 1 }
                if digits > 0, j + 1 < n, p[j] == UInt8(ascii: ":"), p[j + 1] == UInt8(ascii: "\t") {
                    result.append(value)
                }
                while j < n, p[j] != 0x0A { j += 1 }
                i = j + 1
            }
        }
        return result
    }

    /// Instruction lines of `objdump -d -w` output (raw bytes shown, one line per instruction).
    static func lines(_ text: Data) -> [Line] {
        var result: [Line] = []
        for line in String(decoding: text, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true) {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count >= 2, fields[0].hasSuffix(":"),
                  let address = UInt64(fields[0].dropLast().trimmingCharacters(in: .whitespaces), radix: 16)
            else { continue }
            // x86 shows bytes (`74 39`), aarch64 little-endian words (`540000c0`).
            var bytes: [UInt8] = []
            for token in fields[1].split(separator: " ") {
                if token.count == 8, let word = UInt32(token, radix: 16) {
                    bytes += [UInt8(word & 0xFF), UInt8(word >> 8 & 0xFF), UInt8(word >> 16 & 0xFF), UInt8(word >> 24)]
                } else if let byte = UInt8(token, radix: 16) {
                    bytes.append(byte)
                }
            }
            var text = fields.count > 2 ? fields[2...].joined(separator: " ") : ""
            if let comment = text.range(of: "//") { text = String(text[..<comment.lowerBound]) }
            var words = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            var prefixes: [String] = []
            while let first = words.first, prefixWords.contains(first), words.count > 1 {
                prefixes.append(first)
                words.removeFirst()
            }
            var mnemonic = words.first ?? ""
            // Branch hints print as `je,pt` / `je,pn`.
            if let comma = mnemonic.firstIndex(of: ",") {
                prefixes.append(String(mnemonic[mnemonic.index(after: comma)...]))
                mnemonic = String(mnemonic[..<comma])
            }
            // Operands: the rest, without objdump's `# comment`.
            var operands = words.dropFirst().joined(separator: " ")
            if let hash = operands.range(of: " # ") ?? (operands.hasPrefix("# ") ? operands.range(of: "# ") : nil) {
                operands = String(operands[..<hash.lowerBound])
            }
            result.append(Line(address: address, bytes: bytes, mnemonic: mnemonic, prefixes: prefixes,
                               operands: operands.trimmingCharacters(in: .whitespaces)))
        }
        return result
    }

    /// Words objdump writes before a mnemonic for prefixes it does not fold into it.
    static let prefixWords: Set<String> = ["bnd", "notrack", "cs", "ds", "ss", "es", "fs", "gs", "lock", "rep",
                                           "repz", "repnz", "repe", "repne", "data16", "data32", "addr32",
                                           "addr16", "rex", "rex.W", "rex.B", "rex.X", "rex.R", "rex.WB", "rex.WX",
                                           "rex.WR", "rex.RB", "rex.XB", "rex.RX", "rex.WRB", "rex.WXB", "rex.WRX",
                                           "rex.RXB", "rex.WRXB", "xacquire", "xrelease", "{vex}", "{vex3}"]

    /// objdump's listing of raw bytes (`-b binary`), for machine `i386:x86-64`, `i386` or `aarch64`.
    static func raw(_ bytes: [UInt8], machine: String, address: UInt64 = 0) throws -> [Line] {
        let folder = try Fixtures.temporaryFolder("suture-objdump-raw")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("code.bin")
        try Data(bytes).write(to: file)
        let tool = machine == "aarch64" ? "aarch64-linux-gnu-objdump" : "objdump"
        let result = try Fixtures.run(tool, ["-D", "-w", "-z", "-b", "binary", "-m", machine,
                                             "--adjust-vma=\(Hex.address(address))", file.path])
        guard result.status == 0 else {
            throw Fixtures.Failure("\(tool) failed (\(result.status)): \(result.stderr)"
                                   + (machine == "aarch64" ? " (apt-get install binutils-aarch64-linux-gnu)" : ""))
        }
        return lines(Data(result.stdout.utf8))
    }

    /// The destination objdump prints for a direct branch: `6a <nfs_flock+0x6a>` or `0xffffffff810007e0`
    /// (last operand), or nil when the operand is not a plain address.
    static func branchTarget(_ line: Line) -> UInt64? {
        var operand = line.operands
        if let angle = operand.firstIndex(of: "<") { operand = String(operand[..<angle]) }
        if let comma = operand.lastIndex(of: ",") { operand = String(operand[operand.index(after: comma)...]) }
        operand = operand.trimmingCharacters(in: .whitespaces)
        if operand.hasPrefix("0x") { operand.removeFirst(2) }
        guard !operand.isEmpty, operand.allSatisfy(\.isHexDigit) else { return nil }
        return UInt64(operand, radix: 16)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x61...0x66: c - 0x61 + 10
        default: nil
        }
    }
}
