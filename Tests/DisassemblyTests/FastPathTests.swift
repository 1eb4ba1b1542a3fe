import Disassembly
import ELF
import Foundation
import Testing
import TestSupport

/// `boundaries` (the fast path: Capstone without detail, plus its own length table on x86-64) must find
/// exactly the instructions `decode` (Capstone with detail) finds, on any bytes.
@Suite("Fast path agrees with decode")
struct FastPathTests {
    static func sweepDifferences(_ bytes: [UInt8], _ architecture: Architecture, base: UInt64 = 0x1000) throws -> [String] {
        let disassembler = try Disassembler(architecture: architecture)
        let fast = bytes.withUnsafeBytes { disassembler.boundaries($0, address: base) }
        let decoded = disassembler.decode(bytes, address: base)
        let slow = decoded.map(\.address)
        guard fast != slow else { return [] }
        // Report the first few places where the sweeps part.
        var problems: [String] = []
        let slowSet = Set(slow), fastSet = Set(fast)
        for insn in decoded where problems.count < 20 {
            let inside = (insn.address + 1..<insn.endAddress).filter { fastSet.contains($0) }
            if !fastSet.contains(insn.address) || !inside.isEmpty {
                problems.append("decode: \(insn.summary); boundaries starts at \(inside.map { Hex.address($0) })")
            }
        }
        if problems.isEmpty {
            problems.append("boundaries has \(fast.count) starts, decode \(slow.count); first extra: "
                            + "\(fast.first { !slowSet.contains($0) }.map { Hex.address($0) } ?? "none")")
        }
        return problems
    }

    /// x86-64 only: the length table is not used in 32-bit mode.
    @Test("every opcode, prefix set and ModRM byte: first length equal")
    func exhaustiveOpcodes() throws {
        let architecture = Architecture.x86_64
        let disassembler = try Disassembler(architecture: architecture)
        var random = SplitMix64(seed: 0x5EED)
        let prefixSets: [[UInt8]] = architecture == .x86_64
            ? [[], [0x66], [0x67], [0xF3], [0xF2], [0xF0], [0x48], [0x41], [0x66, 0x48], [0x2E], [0x66, 0x2E],
               [0x3E], [0xF3, 0x48], [0x48, 0x66], [0x40, 0x40]]
            : [[], [0x66], [0x67], [0xF3], [0xF2], [0xF0], [0x2E]]
        var failures: [String] = []
        var checked = 0
        var buffer = [UInt8](repeating: 0, count: 24)
        for escape in [false, true] {
            for opcode in 0...255 {
                for prefixes in prefixSets {
                    for m in 0...255 {
                        var n = 0
                        for b in prefixes { buffer[n] = b; n += 1 }
                        if escape { buffer[n] = 0x0F; n += 1 }
                        buffer[n] = UInt8(opcode); n += 1
                        buffer[n] = UInt8(m); n += 1
                        for k in n..<buffer.count { buffer[k] = UInt8.random(in: 0...255, using: &random) }
                        let fast = buffer.withUnsafeBytes { disassembler.boundaries($0, address: 0) }
                        let fastLength = fast.count > 1 ? Int(fast[1]) : buffer.count
                        let one = try #require(disassembler.decodeOne(buffer, address: 0))
                        checked += 1
                        if one.size != fastLength, failures.count < 40 {
                            failures.append("\(Hex.bytes(buffer.prefix(max(one.size, fastLength)))): decode \(one.size) "
                                            + "(\(one.mnemonic) \(one.operands)), boundaries \(fastLength)")
                        }
                    }
                }
            }
        }
        print("\(architecture.rawValue): \(checked) encodings compared")
        let clean = failures.isEmpty
        #expect(clean, Comment(rawValue: failures.joined(separator: "\n")))
    }

    @Test("random bytes: same sweep", arguments: [Architecture.x86_64, .i386, .arm64])
    func randomBytes(architecture: Architecture) throws {
        var random = SplitMix64(seed: 42)
        let bytes = (0..<(1 << 18)).map { _ in UInt8.random(in: 0...255, using: &random) }
        let problems = try Self.sweepDifferences(bytes, architecture)
        let clean = problems.isEmpty
        #expect(clean, Comment(rawValue: problems.joined(separator: "\n")))
    }

    @Test("nfs.ko .text with one byte in 16 changed: same sweep")
    func mutatedKernelCode() throws {
        let kernel = try Fixtures.debianKernel()
        var bytes = try Objdump.sectionBytes(kernel.nfsKo, section: ".text")
        var random = SplitMix64(seed: 7)
        for i in stride(from: 0, to: bytes.count, by: 16) {
            bytes[i + Int.random(in: 0..<16, using: &random) % (bytes.count - i)] = UInt8.random(in: 0...255, using: &random)
        }
        let problems = try Self.sweepDifferences(bytes, .x86_64, base: 0)
        let clean = problems.isEmpty
        #expect(clean, Comment(rawValue: problems.joined(separator: "\n")))
    }
}
