import Foundation
import Testing
import TestSupport
import ELF
import Symbols
import Patching

/// ReferenceObject without a VM: the Debian package's nfs.ko, lockd.ko and vmlinux against readelf
/// and the raw file bytes, and comparisons with "live" dumps built from the file.
struct ReferenceObjectTests {
    /// readelf -sW's FUNC lines for `name`: (value, size, section index), in file order.
    static func readelfFunctions(_ path: String, named name: String) throws -> [(value: UInt64, size: Int, section: Int)] {
        try Fixtures.check("readelf", ["-sW", path]).split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count >= 8, f[3] == "FUNC", f[7] == name, let value = UInt64(f[1], radix: 16),
                  let size = Int(f[2]), let section = Int(f[6]) else { return nil }
            return (value, size, section)
        }
    }

    /// readelf -SW's file offset of section `index`.
    static func readelfSectionOffset(_ path: String, index: Int) throws -> UInt64 {
        let line = try #require(try Fixtures.check("readelf", ["-SW", path]).split(separator: "\n")
            .first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(String(format: "[%2d]", index)) })
        let fields = line.split(separator: "]")[1].split(separator: " ")
        return try #require(UInt64(fields[3], radix: 16))
    }

    @Test("nfs_flock from nfs.ko: place, size and bytes as readelf and the raw file have them; the je is compared")
    func nfsFlockAsReadelfSeesIt() throws {
        let ko = try Fixtures.debianKernel().nfsKo.path
        let expected = try #require(try Self.readelfFunctions(ko, named: "nfs_flock").first)
        let sectionOffset = try Self.readelfSectionOffset(ko, index: expected.section)
        let reference = try ReferenceObject(path: ko)
        let function = try reference.function(named: "nfs_flock")
        #expect(function.offset == expected.value && function.size == expected.size)
        #expect(function.section.index == expected.section && function.section.name == ".text")
        #expect(function.fileOffset == sectionOffset + expected.value)
        let raw = try Data(contentsOf: URL(fileURLWithPath: ko))
        #expect(function.bytes == Array(raw[Int(function.fileOffset)..<Int(function.fileOffset) + expected.size]))
        #expect(Array(function.bytes[0x2f...0x30]) == [0x74, 0x39])
        #expect(function.mask[0x2f] == 0xff && function.mask[0x30] == 0xff)
        // The ftrace call at the start is masked whole; so is a relocated operand.
        #expect(function.mask[0..<5].allSatisfy { $0 == 0 })
        #expect(function.maskedByteCount > 5 && function.maskedByteCount < function.size / 2)
        let image = function.image(module: "nfs")
        #expect(image.symbol == "nfs_flock" && image.module == "nfs" && image.bytes == function.bytes && image.mask == function.mask)
    }

    @Test("compare: rewritten bytes inside sites are explained, the article's byte is not")
    func comparisonExplainsOnlySiteBytes() throws {
        let reference = try ReferenceObject(path: try Fixtures.debianKernel().nfsKo.path)
        let function = try reference.function(named: "nfs_flock")
        // "Live" as the loader would leave it: every masked byte changed.
        var live = function.bytes
        for i in live.indices where function.mask[i] == 0 { live[i] ^= 0x5a }
        let clean = function.compare(live: live)
        #expect(clean.matches, "\(clean.summary)")
        #expect(clean.differing == function.maskedByteCount)
        #expect(clean.explainedBytes[.mcountLoc] == 5)
        #expect(clean.summary.contains("none unexplained"))

        live[0x2f] = 0x75
        let patched = function.compare(live: live)
        #expect(patched.unexplained == [0x2f])
        #expect(patched.firstMismatch == "nfs_flock+0x2f: nfs.ko has 74, live 75")
        // A short dump: every missing byte is unexplained.
        let short = function.compare(live: Array(function.bytes.prefix(100)))
        #expect(short.unexplained == Array(100..<function.size))
    }

    @Test("errors: a function the file lacks, and duplicates without an ordinal, name the file and the candidates")
    func missingAndAmbiguousFunctions() throws {
        let kernel = try Fixtures.debianKernel()
        let nfsv3 = try ReferenceObject(path: kernel.module("fs/nfs/nfsv3.ko").path)
        #expect {
            try nfsv3.function(named: "nfs_flock")
        } throws: { error in
            "\(error)".contains("nfsv3.ko") && "\(error)".contains("no function symbol nfs_flock")
        }

        // lockd.ko has two static decode_cookie functions (readelf lists both).
        let lockdPath = kernel.module("fs/lockd/lockd.ko").path
        let both = try Self.readelfFunctions(lockdPath, named: "decode_cookie")
        #expect(both.count == 2)
        let lockd = try ReferenceObject(path: lockdPath)
        #expect {
            try lockd.function(named: "decode_cookie")
        } throws: { error in
            "\(error)".contains("2 functions are named decode_cookie") && "\(error)".contains("decode_cookie/2")
        }
        let inOrder = both.sorted { ($0.section, $0.value) < ($1.section, $1.value) }
        for (ordinal, expected) in inOrder.enumerated() {
            let function = try lockd.function(named: "decode_cookie", ordinal: ordinal + 1)
            #expect(function.offset == expected.value && function.size == expected.size)
        }
        if inOrder[0].size != inOrder[1].size {
            #expect(try lockd.function(named: "decode_cookie", liveSize: UInt64(inOrder[1].size)).offset == inOrder[1].value)
        }
    }

    @Test("a stripped vmlinux through live-style symbols: the slide is undone and the bytes are objdump's")
    func strippedVmlinuxThroughSymbols() throws {
        let path = try Fixtures.debianVmlinux().path
        let file = try ELFFile(path: path)
        let text = try #require(file.section(named: ".text"))
        // A kernel moved by 16 MB: _text and one function, as kallsyms would list them.
        let slide: UInt64 = 0x100_0000
        let objdump = try Fixtures.check("objdump", ["-d", "--start-address=0x\(String(text.address + 0x1000, radix: 16))",
                                                     "--stop-address=0x\(String(text.address + 0x1010, radix: 16))", path])
        let symbols = SymbolIndex([
            SymbolRecord(name: "_text", address: text.address + slide, kind: "T"),
            SymbolRecord(name: "some_function", address: text.address + 0x1000 + slide, kind: "T", size: 0x10),
        ])
        let reference = try ReferenceObject(vmlinux: file, live: symbols)
        #expect(reference.slide == Int64(slide))
        let function = try reference.function(named: "some_function")
        #expect(function.section.name == ".text" && function.offset == 0x1000 && function.size == 0x10)
        // objdump's bytes for the same 16 bytes, in order.
        let dumped = objdump.split(separator: "\n").compactMap { line -> [UInt8]? in
            let parts = line.split(separator: "\t")
            guard parts.count >= 2, parts[0].hasSuffix(":") else { return nil }
            return Hex.parseBytes(parts[1].trimmingCharacters(in: .whitespaces))
        }.flatMap { $0 }
        #expect(Array(function.bytes) == Array(dumped.prefix(16)), "\(objdump)")

        #expect {
            try ReferenceObject(vmlinux: file, live: SymbolIndex([]))
        } throws: { error in
            "\(error)".contains("no _text")
        }
    }
}
