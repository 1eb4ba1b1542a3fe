import Foundation
import Testing
import TestSupport
@testable import Targets

/// FileTarget against gcc-built files and Debian's nfs.ko, with readelf/nm/objdump as oracles.
struct FileTargetTests {
    /// A symbol's value and section name per `readelf -sW` and `readelf -SW`.
    static func symbol(_ name: String, in file: URL) throws -> (value: UInt64, section: String) {
        let symbols = try Fixtures.check("readelf", ["-sW", file.path])
        guard let line = symbols.split(separator: "\n").first(where: { $0.split(separator: " ").last == Substring(name) }) else {
            throw Fixtures.Failure("readelf: no symbol \(name) in \(file.path)")
        }
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let value = UInt64(f[1], radix: 16), let index = Int(f[6]) else { throw Fixtures.Failure("readelf line: \(line)") }
        return (value, try sections(file)[index]?.name ?? "?")
    }

    /// Section index → (name, address, offset) per `readelf -SW`.
    static func sections(_ file: URL) throws -> [Int: (name: String, address: UInt64, offset: UInt64)] {
        var result: [Int: (String, UInt64, UInt64)] = [:]
        for line in try Fixtures.check("readelf", ["-SW", file.path]).split(separator: "\n") {
            guard let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]"),
                  let index = Int(line[line.index(after: open)..<close].trimmingCharacters(in: .whitespaces)) else { continue }
            let f = line[line.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 4, let address = UInt64(f[2], radix: 16), let offset = UInt64(f[3], radix: 16) else { continue }
            result[index] = (String(f[0]), address, offset)
        }
        return result
    }

    static func buildID(_ file: URL) throws -> String? {
        try Fixtures.check("readelf", ["-n", file.path]).split(separator: "\n")
            .first { $0.contains("Build ID:") }.flatMap { $0.split(separator: " ").last.map(String.init) }
    }

    @Test func executablePatchedOnDiskRunsPatched() throws {
        let executable = try TargetFixtures.loopProgram()
        let target = try FileTarget(path: executable.path)
        defer { target.close() }
        #expect(target.capabilities == [.write])
        let identity = try target.identity()
        #expect(identity.kind == .file && identity.path == executable.path)
        let buildID = try Self.buildID(executable)
        #expect(buildID != nil && identity.buildID == buildID)

        let check = try Self.symbol("check", in: executable)
        let loads = try TargetFixtures.programHeaders(executable)
        let segment = try #require(loads.first { check.value >= $0.vaddr && check.value < $0.vaddr + $0.filesz })
        let offset = check.value - segment.vaddr + segment.offset
        #expect(try target.read(at: check.value, count: 27) == TargetFixtures.fileBytes(executable, offset: offset, count: 27))

        let jump = try TargetFixtures.conditionalJump(in: "check", of: executable)
        #expect(try Fixtures.check(executable.path, ["once"]) == "result 1\n")
        try target.write(at: check.value + jump.offset, bytes: [jump.opcode ^ 1])
        #expect(try TargetFixtures.fileBytes(executable, offset: offset + jump.offset, count: 1) == [jump.opcode ^ 1])
        #expect(try target.read(at: check.value + jump.offset, count: 1) == [jump.opcode ^ 1])
        #expect(try Fixtures.check(executable.path, ["once"]) == "result 0\n")
        try target.write(at: check.value + jump.offset, bytes: [jump.opcode])
        #expect(try Fixtures.check(executable.path, ["once"]) == "result 1\n")

        // .bss has no bytes in the file; process-only operations are refused.
        let pattern = try Self.symbol("pattern", in: executable)
        #expect(pattern.section == ".bss")
        #expect(throws: TargetError.unmappedAddress(target: target.name, address: pattern.value, count: 4,
                                                    detail: "in no PT_LOAD segment's file image or allocated section of \(executable.path)")) {
            try target.read(at: pattern.value, count: 4)
        }
        #expect(throws: TargetError.self) { try target.stop() }
        #expect(throws: TargetError.self) { try target.programCounters() }
    }

    @Test func relocatableObjectThroughSectionOffsets() throws {
        let object = try Fixtures.compileFixture("targets_loop.c", flags: ["-O0", "-c"])
        let target = try FileTarget(path: object.path)
        defer { target.close() }
        let check = try Self.symbol("check", in: object)
        #expect(check.section == ".text")
        let text = try #require(try Self.sections(object).values.first { $0.name == ".text" })
        #expect(target.sectionAddress(named: ".text") == text.offset)
        let jump = try TargetFixtures.conditionalJump(in: "check", of: object)
        let address = text.offset + check.value
        #expect(try target.read(at: address, count: 27) == TargetFixtures.fileBytes(object, offset: text.offset + check.value, count: 27))
        #expect(try target.read(at: address + jump.offset, count: 1) == [jump.opcode])
    }

    @Test func debianNfsModuleFlockBranch() throws {
        // LAB.md: nfs_flock+0x2f is `74 39` (je) in Debian's nfs.ko; objdump is the oracle here.
        let kernel = try Fixtures.debianKernel()
        let folder = try Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let module = folder.appendingPathComponent("nfs.ko")
        try FileManager.default.copyItem(at: kernel.nfsKo, to: module)
        let target = try FileTarget(path: module.path)
        defer { target.close() }

        let flock = try Self.symbol("nfs_flock", in: module)
        let base = try #require(target.sectionAddress(named: flock.section))
        let listing = try Fixtures.check("objdump", ["-d", "--disassemble=nfs_flock", "-j", flock.section, module.path])
        var expected: [UInt8] = []
        for line in listing.split(separator: "\n") {
            let parts = line.split(separator: "\t")
            guard parts.count >= 2, parts[0].hasSuffix(":"), parts[0].hasPrefix(" ") else { continue }
            expected += parts[1].split(separator: " ").compactMap { UInt8($0, radix: 16) }
        }
        try #require(expected.count > 0x31)
        #expect(try target.read(at: base + flock.value, count: expected.count) == expected)
        #expect(try target.read(at: base + flock.value + 0x2f, count: 2) == [0x74, 0x39])
        #expect(try target.identity().buildID == (try Self.buildID(module)))
    }

    @Test func compressedModuleIsReadableNotWritable() throws {
        let kernel = try Fixtures.debianKernel()
        let folder = try Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let plain = folder.appendingPathComponent("nfs.ko")
        try FileManager.default.copyItem(at: kernel.nfsKo, to: plain)
        try Fixtures.check("xz", ["-k", "-T1", plain.path])
        let compressed = folder.appendingPathComponent("nfs.ko.xz")
        let plainTarget = try FileTarget(path: plain.path)
        let target = try FileTarget(path: compressed.path)
        defer { target.close(); plainTarget.close() }
        #expect(target.elf.compression == "xz")
        #expect(target.capabilities == [])
        let flock = try Self.symbol("nfs_flock", in: plain)
        let base = try #require(target.sectionAddress(named: flock.section))
        #expect(base == plainTarget.sectionAddress(named: flock.section))
        #expect(try target.read(at: base + flock.value, count: 0x40) == plainTarget.read(at: base + flock.value, count: 0x40))
        let error = #expect(throws: TargetError.self) { try target.write(at: base + flock.value + 0x2f, bytes: [0x75]) }
        guard case .notSupported? = error else {
            Issue.record("expected notSupported, got \(String(describing: error))")
            return
        }
        #expect(try target.identity().buildID == (try Self.buildID(plain)))
    }
}
