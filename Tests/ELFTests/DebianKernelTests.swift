import ELF
import Foundation
import Testing
import TestSupport

/// Debian's real kernel files (the pinned 6.1.0-56-amd64 package), compared with readelf.
@Suite struct DebianKernelTests {
    @Test func nfsModuleMatchesReadelf() throws {
        let kernel = try Fixtures.debianKernel()
        let elf = try ELFFile(path: kernel.nfsKo.path)
        #expect(elf.header.type == .relocatable && elf.header.machine == .x86_64)
        let counts = try expectMatchesReadelf(kernel.nfsKo.path, file: elf)
        #expect(counts["sections", default: 0] == 71)
        #expect(counts["symbols", default: 0] > 3000)
        #expect(counts["relocations", default: 0] > 10000)
        #expect(try elf.buildID()?.count == 20)

        // The function of the 2007 article, and the call relocations inside it.
        let flock = try #require(try elf.symbols().first { $0.name == "nfs_flock" })
        #expect(flock.type == .function && flock.size > 0x54)
        let text = elf.sections[Int(flock.sectionIndex)]
        let inside = try elf.relocations(applyingTo: text).filter { $0.offset >= flock.value && $0.offset < flock.value + flock.size }
        #expect(inside.contains { $0.typeName == "R_X86_64_PLT32" })
        #expect(inside.contains { $0.symbolName == "__fentry__" })
    }

    @Test func extractedVmlinuxMatchesReadelf() throws {
        let vmlinux = try Fixtures.debianVmlinux()
        let elf = try ELFFile(path: vmlinux.path)
        #expect(elf.header.type == .executable && elf.header.entry == 0x100_0000)
        let counts = try expectMatchesReadelf(vmlinux.path, file: elf)
        #expect(counts["sections", default: 0] > 30)
        #expect(counts["segments", default: 0] == 5)
        #expect(counts["notes", default: 0] > 10)
        #expect(try elf.symbols().isEmpty)          // Debian's vmlinux.bin is stripped
        #expect(try elf.buildID()?.count == 20)

        // .text through the first PT_LOAD: same bytes as the section.
        let text = try #require(elf.section(named: ".text"))
        let viaAddress = try elf.bytes(atAddress: text.address + 0x1000, count: 64)
        #expect(viaAddress.bytes == (try elf.data(of: text).view(offset: 0x1000, count: 64).bytes))
        #expect(viaAddress.fileOffset == text.offset + 0x1000)
    }

    /// `.ko.xz` and `.ko.zst` made from nfs.ko with the xz and zstd tools read exactly like nfs.ko,
    /// detected by their magic even without the suffix.
    @Test(arguments: [("xz", ["xz", "-c", "--check=crc32"], ".ko.xz"), ("zstd", ["zstd", "-c", "-q"], ".ko.zst")])
    func compressedModulesReadLikeThePlainOne(format: String, command: [String], suffix: String) throws {
        let kernel = try Fixtures.debianKernel()
        let folder = try Fixtures.temporaryFolder("suture-elf-ko")
        let compressed = folder.appendingPathComponent("nfs" + suffix)
        let result = try Fixtures.run("sh", ["-c", "\(command.joined(separator: " ")) '\(kernel.nfsKo.path)' > '\(compressed.path)'"])
        #expect(result.status == 0, Comment(rawValue: result.stderr))
        let noSuffix = folder.appendingPathComponent("nfs-module")
        try FileManager.default.copyItem(at: compressed, to: noSuffix)

        let plain = try ELFFile(path: kernel.nfsKo.path)
        for path in [compressed.path, noSuffix.path] {
            let elf = try ELFFile(path: path)
            #expect(elf.compression == format)
            #expect(elf.contents.bytes == plain.contents.bytes)
            #expect(elf.sections == plain.sections)
            #expect(try elf.symbols() == plain.symbols())
            let text = try #require(elf.section(named: ".text"))
            #expect(try elf.relocations(applyingTo: text) == plain.relocations(applyingTo: text))
            #expect(try elf.buildID() == plain.buildID())
        }
        // And readelf agrees on the decompressed file too (the oracle reads the tool's output).
        let decompressed = folder.appendingPathComponent("nfs-decompressed.ko")
        try Data(try ELFFile(path: compressed.path).contents.bytes).write(to: decompressed)
        try expectMatchesReadelf(decompressed.path, checkRelocations: false)
    }
}
