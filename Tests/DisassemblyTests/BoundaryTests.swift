import Disassembly
import ELF
import Foundation
import Testing
import TestSupport

/// Instruction boundaries over whole kernel `.text` sections must equal objdump's, like the kernel's own
/// arch/x86/tools/insn_decoder_test does for its decoder.
@Suite("Instruction boundaries against objdump")
struct BoundaryTests {
    /// Where a linear sweep by Capstone and objdump's listing part ways, and how each decodes that spot.
    struct Disagreement: CustomStringConvertible {
        var address: UInt64
        var objdumpLength: UInt64
        var capstoneLength: UInt64
        var bytes: [UInt8]
        var capstone: String
        var description: String {
            "\(Hex.address(address)): \(Hex.bytes(bytes)): objdump length \(objdumpLength), "
                + "Capstone length \(capstoneLength) (\(capstone))"
        }
    }

    /// Known Capstone 4.0.2 vs binutils 2.40 disagreements, keyed by the instruction's bytes as objdump
    /// splits them. Each entry needs a reason.
    static let allowlist: [String: String] = [:]

    /// Compares two sorted boundary lists; after a difference, both sides resynchronise at the next
    /// address they share.
    static func compare(ours: [UInt64], objdump theirs: [UInt64], bytes: [UInt8], base: UInt64,
                        disassembler: Disassembler) -> [Disagreement] {
        var result: [Disagreement] = []
        var i = 0, j = 0
        func record(_ start: UInt64, _ ourEnd: UInt64, _ theirEnd: UInt64) {
            let offset = Int(start - base)
            let length = Int(max(ourEnd, theirEnd) - start)
            let slice = Array(bytes[offset..<min(bytes.count, offset + max(1, min(length, 16)))])
            let decoded = disassembler.decodeOne(bytes[offset...], address: start).map(\.summary) ?? "nothing"
            result.append(Disagreement(address: start, objdumpLength: theirEnd - start, capstoneLength: ourEnd - start,
                                       bytes: slice, capstone: decoded))
        }
        while i < ours.count, j < theirs.count {
            if ours[i] == theirs[j] { i += 1; j += 1; continue }
            let start = i > 0 ? ours[i - 1] : base
            record(start, ours[i], theirs[j])
            while i < ours.count, j < theirs.count, ours[i] != theirs[j] {
                if ours[i] < theirs[j] { i += 1 } else { j += 1 }
            }
        }
        if i < ours.count || j < theirs.count {
            let start = i > 0 ? ours[i - 1] : base
            let end = base + UInt64(bytes.count)
            record(start, i < ours.count ? ours[i] : end, j < theirs.count ? theirs[j] : end)
        }
        return result
    }

    static func check(file: URL, label: String, address: UInt64) throws -> Int {
        let bytes = try Objdump.sectionBytes(file, section: ".text")
        let text = try Objdump.output(["-d", "-z", "--no-show-raw-insn", "-j", ".text"], of: file)
        let theirs = Objdump.instructionAddresses(text)
        let disassembler = try Disassembler(architecture: .x86_64)
        let ours = bytes.withUnsafeBytes { disassembler.boundaries($0, address: address) }
        try #require(!theirs.isEmpty, Comment(rawValue: "objdump listed no instructions for \(label)"))
        #expect(theirs.first == address)
        let disagreements = compare(ours: ours, objdump: theirs, bytes: bytes, base: address, disassembler: disassembler)
        let unexpected = disagreements.filter { Self.allowlist[Hex.bytes($0.bytes.prefix(Int($0.objdumpLength)), separator: "")] == nil }
        print("\(label) .text: \(bytes.count) bytes, objdump \(theirs.count) instructions, Capstone \(ours.count); "
              + "\(disagreements.count) disagreements (\(disagreements.count - unexpected.count) allowlisted)")
        // One line per distinct byte pattern, with how often and where it first occurs.
        var patterns: [String: (count: Int, first: Disagreement)] = [:]
        for d in unexpected {
            let key = Hex.bytes(d.bytes.prefix(Int(d.objdumpLength)))
            patterns[key, default: (0, d)].count += 1
        }
        let report = patterns.sorted { $0.value.first.address < $1.value.first.address }
            .map { "\($0.value.count)× \($0.value.first)" }.joined(separator: "\n")
        let clean = unexpected.isEmpty
        #expect(clean, Comment(rawValue: "\(label): \(unexpected.count) boundary disagreements, \(patterns.count) patterns:\n" + report))
        if unexpected.isEmpty && disagreements.isEmpty { #expect(ours == theirs) }
        return ours.count
    }

    @Test("nfs.ko .text: every instruction boundary equals objdump's")
    func nfsModule() throws {
        let kernel = try Fixtures.debianKernel()
        _ = try Self.check(file: kernel.nfsKo, label: "nfs.ko", address: 0)
    }

    @Test("vmlinux .text (14.7 MB): every instruction boundary equals objdump's")
    func vmlinux() throws {
        let vmlinux = try Fixtures.debianVmlinux()
        let sections = try Fixtures.check("readelf", ["-SW", vmlinux.path])
        // "  [ 1] .text             PROGBITS        ffffffff81000000 200000 e01d32 00  AX ..."
        let line = try #require(sections.split(separator: "\n").first { $0.contains(" .text ") })
        let fields = line.split(separator: "]", maxSplits: 1)[1].split(separator: " ")
        let address = try #require(UInt64(fields[2], radix: 16))
        _ = try Self.check(file: vmlinux, label: "vmlinux", address: address)
    }
}
