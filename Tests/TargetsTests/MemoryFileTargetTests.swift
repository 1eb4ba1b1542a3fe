import Foundation
import Testing
import TestSupport
@testable import Targets

/// KmemTarget, DevMemTarget and KcoreTarget against files laid out like their devices, filled with
/// real bytes (Debian's vmlinux, a gcore core of a live process).
@Suite(.serialized) struct MemoryFileTargetTests {
    /// The pieces of Debian's vmlinux the identity tests need, found with readelf and a byte
    /// search (the oracle for the banner's place: the first "Linux version " in .rodata).
    struct KernelPieces {
        var vmlinux: URL
        var text: (offset: UInt64, vaddr: UInt64, paddr: UInt64, size: UInt64)   // first PT_LOAD
        var banner: (vaddr: UInt64, bytes: [UInt8])                              // with its NUL
        var notes: (vaddr: UInt64, bytes: [UInt8])
        var buildID: String
    }

    static func kernelPieces() throws -> KernelPieces {
        let vmlinux = try Fixtures.debianVmlinux()
        let headers = try Fixtures.check("readelf", ["-lW", vmlinux.path]).split(separator: "\n")
        let load = try #require(headers.first { $0.hasPrefix("  LOAD") }).split(separator: " ")
        func hex(_ s: Substring) -> UInt64 { UInt64(s.dropFirst(2), radix: 16) ?? 0 }
        let text = (offset: hex(load[1]), vaddr: hex(load[2]), paddr: hex(load[3]), size: hex(load[4]))
        let sections = try FileTargetTests.sections(vmlinux)
        let rodata = try #require(sections.values.first { $0.name == ".rodata" })
        let notesSection = try #require(sections.values.first { $0.name == ".notes" })
        let sizeLine = try #require(try Fixtures.check("readelf", ["-SW", vmlinux.path]).split(separator: "\n").first { $0.contains(" .notes ") })
        let notesSize = try #require(UInt64(sizeLine.split(separator: "]")[1].split(separator: " ")[4], radix: 16))

        let data = try Data(contentsOf: vmlinux, options: .alwaysMapped)
        let needle = Data("Linux version ".utf8)
        let start = try #require(data.range(of: needle, in: Int(rodata.offset)..<data.count)?.lowerBound)
        let end = try #require(data[start...].firstIndex(of: 0))
        let banner = [UInt8](data[start...end])
        let notes = [UInt8](data[Int(notesSection.offset)..<Int(notesSection.offset + notesSize)])
        let buildID = try #require(try FileTargetTests.buildID(vmlinux))
        return KernelPieces(vmlinux: vmlinux, text: text, banner: (rodata.address + UInt64(start) - rodata.offset, banner),
                            notes: (notesSection.address, notes), buildID: buildID)
    }

    static func write(_ bytes: [UInt8], at offset: UInt64, to file: URL) throws {
        if !FileManager.default.fileExists(atPath: file.path) { _ = FileManager.default.createFile(atPath: file.path, contents: nil) }
        let handle = try FileHandle(forWritingTo: file)
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: bytes)
    }

    @Test func kmemLayoutOffsetIsVirtualAddress() throws {
        let pieces = try Self.kernelPieces()
        let folder = try Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // A sparse file whose offsets are "virtual addresses" (a regular file cannot reach the
        // kernel half, so the pieces sit at lower addresses with the same layout).
        let image = folder.appendingPathComponent("kmem")
        let bannerAddress: UInt64 = 0x40_0000_00a0, notesAddress: UInt64 = 0x40_0049_1990
        try Self.write(pieces.banner.bytes, at: bannerAddress, to: image)
        try Self.write(pieces.notes.bytes, at: notesAddress, to: image)
        let code: [UInt8] = [0x0f, 0x1f, 0x44, 0x00, 0x00, 0x74, 0x39, 0xc3]
        try Self.write(code, at: 0x41_0000_0000, to: image)

        let symbols = KernelSymbols(linuxBanner: bannerAddress, startNotes: notesAddress,
                                    stopNotes: notesAddress + UInt64(pieces.notes.bytes.count))
        let target = try KmemTarget(path: image.path, kernel: symbols)
        defer { target.close() }
        #expect(target.capabilities == [.write, .live])
        let identity = try target.identity()
        #expect(identity.kind == .kernel)
        #expect(identity.release == "6.1.0-56-amd64")
        #expect(identity.buildID == pieces.buildID)
        #expect(identity.banner.map { Array($0.utf8) + [0x0a, 0] } == pieces.banner.bytes)

        #expect(try target.read(at: 0x41_0000_0000, count: code.count) == code)
        try target.write(at: 0x41_0000_0005, bytes: [0x75])
        #expect(try target.read(at: 0x41_0000_0005, count: 2) == [0x75, 0x39])
        #expect(try TargetFixtures.fileBytes(image, offset: 0x41_0000_0005, count: 1) == [0x75])
        try target.write(at: 0x41_0000_0005, bytes: [0x74])
        #expect(try TargetFixtures.fileBytes(image, offset: 0x41_0000_0000, count: code.count) == code)

        // Past the end: an error naming the address, not a partial read.
        #expect(throws: TargetError.shortTransfer(target: target.name, operation: "read (end of \(image.path))",
                                                  address: 0x41_0000_0004, expected: 16, transferred: 4)) {
            try target.read(at: 0x41_0000_0004, count: 16)
        }
        #expect(throws: TargetError.self) { try target.stop() }
        #expect(throws: TargetError.self) { try target.programCounters() }
        try target.resume()   // nothing stopped: a no-op
    }

    @Test func devMemTranslatesKernelImageAndDirectMap() throws {
        let pieces = try Self.kernelPieces()
        let folder = try Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // Physical memory with the kernel's first segment loaded 46 MiB higher than linked
        // (physical KASLR): phys_base = 0x2e00000.
        let physBase: UInt64 = 0x2e0_0000
        let image = folder.appendingPathComponent("mem")
        let segment = try TargetFixtures.fileBytes(pieces.vmlinux, offset: pieces.text.offset, count: Int(pieces.text.size))
        try Self.write(segment, at: pieces.text.paddr + physBase, to: image)
        #expect(pieces.text.vaddr - KernelSymbols.startKernelMap == pieces.text.paddr)
        // The page_offset_base variable, somewhere in .data, holding the direct map's start.
        let pageOffsetVariable: UInt64 = 0xffff_ffff_82a0_0100
        let pageOffset: UInt64 = 0xffff_9a80_0000_0000
        try Self.write(withUnsafeBytes(of: pageOffset.littleEndian, Array.init),
                       at: pageOffsetVariable - KernelSymbols.startKernelMap + physBase, to: image)

        let symbols = KernelSymbols(linuxBanner: pieces.banner.vaddr, startNotes: pieces.notes.vaddr,
                                    stopNotes: pieces.notes.vaddr + UInt64(pieces.notes.bytes.count),
                                    pageOffsetBase: pageOffsetVariable)
        let target = try DevMemTarget(path: image.path, physBase: physBase, kernel: symbols)
        defer { target.close() }
        #expect(target.pageOffsetBase == pageOffset)
        let identity = try target.identity()
        #expect(identity.release == "6.1.0-56-amd64")
        #expect(identity.buildID == pieces.buildID)

        // Kernel text through the image mapping equals vmlinux; the direct map sees the same bytes.
        let at: UInt64 = 0x12_3450
        let viaImage = try target.read(at: pieces.text.vaddr + at, count: 0x4000)
        #expect(viaImage == Array(segment[Int(at)..<Int(at) + 0x4000]))
        let directMap = pageOffset + pieces.text.paddr + physBase + at
        #expect(try target.read(at: directMap, count: 0x4000) == viaImage)

        // A write through one mapping is visible through the other; revert.
        try target.write(at: pieces.text.vaddr + at, bytes: [viaImage[0] ^ 0xff])
        #expect(try target.read(at: directMap, count: 1) == [viaImage[0] ^ 0xff])
        try target.write(at: directMap, bytes: [viaImage[0]])
        #expect(try target.read(at: pieces.text.vaddr + at, count: 0x10) == Array(viaImage[0..<0x10]))

        // User addresses are in neither mapping.
        #expect(throws: TargetError.self) { try target.read(at: 0x7fff_0000_0000, count: 1) }

        // phys_base from /proc/iomem's "Kernel code" line and _text.
        let iomem = "00100000-bffdffff : System RAM\n  03e00000-05009987 : Kernel code\n  05200000-05a5dfff : Kernel rodata\n"
        #expect(DevMemTarget.physBase(iomem: iomem, textAddress: 0xffff_ffff_8100_0000) == 0x2e0_0000)
    }

    @Test func gcoreCoreReadThroughProgramHeaders() throws {
        let executable = try TargetFixtures.loopProgram()
        let program = try LiveProgram(executable)
        defer { program.stop() }
        let folder = try Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let prefix = folder.appendingPathComponent("core").path
        let gcore = try Fixtures.run("gcore", ["-o", prefix, String(program.pid)])
        let core = URL(fileURLWithPath: "\(prefix).\(program.pid)")
        try #require(FileManager.default.fileExists(atPath: core.path), "gcore failed: \(gcore.stderr)")

        let target = try KcoreTarget(path: core.path)
        defer { target.close() }
        #expect(target.capabilities == [])
        // The PT_LOAD ranges with file bytes are the ones readelf lists.
        let loads = try TargetFixtures.programHeaders(core).filter { $0.filesz > 0 }
        #expect(target.loadedRanges == loads.map { $0.vaddr..<($0.vaddr + $0.filesz) })

        // The pattern the program computed into .bss, and `input` in .data.
        let pattern = try #require(program.printed["pattern"])
        let expected = (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
        #expect(try target.read(at: pattern, count: 4096) == expected)
        let input = try TargetFixtures.runtimeAddress(of: "input", in: executable, pid: program.pid)
        #expect(try target.read(at: input.runtime, count: 4) == [7, 0, 0, 0])
        #expect(try target.identity() == TargetIdentity(kind: .file, path: core.path))

        #expect(throws: TargetError.self) { try target.read(at: 0x10, count: 4) }
        #expect(throws: TargetError.notSupported(target: target.name, operation: "write", reason: "a core image is read-only")) {
            try target.write(at: pattern, bytes: [0])
        }
        #expect(throws: TargetError.self) { try KcoreTarget(path: executable.path) }   // not ET_CORE
    }
}
