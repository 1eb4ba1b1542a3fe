import ELF
import Foundation
import Testing
import TestSupport

/// ELF files gcc builds at test time from Tests/Fixtures/elf_sample.c, compared with readelf.
@Suite struct GCCOutputTests {
    /// Definitions the sample references, so the PIE executable links.
    static let support = """
        int external_counter = 3;
        void external_function(int value) { external_counter += value; }
        int external_printf(const char *format, ...) { return format[0]; }
        """

    @Test func relocatableObject() throws {
        let object = try Fixtures.compileFixture("elf_sample.c", flags: ["-O2", "-c"])
        let elf = try ELFFile(path: object.path)
        #expect(elf.header.type == .relocatable)
        #expect(elf.header.machine == .x86_64)
        #expect(elf.header.elfClass == .elf64)
        let counts = try expectMatchesReadelf(object.path, file: elf)
        #expect(counts["symbols", default: 0] > 15)
        #expect(counts["relocations", default: 0] > 15)

        // Names the patching code relies on.
        let text = try #require(elf.section(named: ".text"))
        let relocations = try elf.relocations(applyingTo: text)
        #expect(relocations.contains { $0.typeName == "R_X86_64_PLT32" && $0.symbolName == "external_function" })
        #expect(relocations.allSatisfy { $0.hasExplicitAddend && $0.fieldSize != nil })
        let classify = try #require(try elf.symbols().first { $0.name == "classify" })
        #expect(classify.type == .function && classify.binding == .global && classify.isDefined)
        #expect(try elf.symbols().first { $0.name == "weak_hook" }?.binding == .weak)
        #expect(try elf.symbols().first { $0.name == "thread_local_value" }?.type == .tls)
        #expect(try elf.symbols().first { $0.name == "external_counter" }?.isUndefined == true)
    }

    /// Section contents equal objdump's hex dump (an independent reader of the same bytes).
    @Test func sectionDataMatchesObjdump() throws {
        let object = try Fixtures.compileFixture("elf_sample.c", flags: ["-O2", "-c"])
        let elf = try ELFFile(path: object.path)
        let text = try #require(elf.section(named: ".text"))
        let dump = try Fixtures.check("objdump", ["-s", "-j", ".text", object.path])
        let bytes = try Self.parseObjdumpHex(dump)
        #expect(try elf.data(of: text).bytes == bytes)
        #expect(bytes.count == Int(text.size))
        let bss = try #require(elf.section(named: ".bss"))
        #expect(try elf.data(of: bss).isEmpty)
    }

    @Test func pieExecutable() throws {
        let folder = try Fixtures.temporaryFolder("suture-elf-pie")
        let support = folder.appendingPathComponent("support.c")
        try Self.support.write(to: support, atomically: true, encoding: .utf8)
        let executable = try Fixtures.compileFixture(
            "elf_sample.c", flags: ["-O2", "-fPIE", "-pie", "-Wl,--build-id", support.path], in: folder)
        let elf = try ELFFile(path: executable.path)
        #expect(elf.header.type == .sharedObject)   // PIE executables are ET_DYN
        let counts = try expectMatchesReadelf(executable.path, file: elf)
        #expect(counts["segments", default: 0] >= 8)
        #expect(counts["relocations", default: 0] > 5)
        #expect(try elf.buildID()?.count == 20)
        #expect(!(try elf.dynamicSymbols().isEmpty))

        // Addresses map through PT_LOAD to the same bytes the section holds.
        let main = try #require(try elf.symbols().first { $0.name == "main" })
        let text = try #require(elf.section(named: ".text"))
        let viaAddress = try elf.bytes(atAddress: main.value, count: Int(main.size))
        let viaSection = try elf.data(of: text).view(offset: Int(main.value - text.address), count: Int(main.size))
        #expect(viaAddress.bytes == viaSection.bytes)
        #expect(elf.fileOffset(ofAddress: main.value) == text.offset + (main.value - text.address))
        // The dynamic relocations (.rela.dyn, sh_info 0) apply to the null section.
        let dynamic = try elf.relocations(applyingTo: elf.sections[0])
        #expect(dynamic.contains { $0.typeName == "R_X86_64_RELATIVE" })
        #expect(throws: ELFError.self) { try elf.bytes(atAddress: 0xdead_0000_0000, count: 4) }
    }

    @Test func sharedLibrary() throws {
        let library = try Fixtures.compileFixture("elf_sample.c", flags: ["-O2", "-shared", "-fPIC", "-Wl,--build-id"])
        let elf = try ELFFile(path: library.path)
        let counts = try expectMatchesReadelf(library.path, file: elf)
        #expect(counts["relocations", default: 0] > 5)
        let dynamic = try elf.dynamicSymbols()
        #expect(dynamic.contains { $0.name == "classify" && $0.isDefined })
        #expect(dynamic.contains { $0.name == "external_function" && $0.isUndefined })
        let plt = try #require(elf.section(named: ".rela.plt"))
        #expect(try elf.relocations(in: plt).contains { $0.typeName == "R_X86_64_JUMP_SLOT" && $0.symbolName == "external_function" })
    }

    /// ELF32 with REL relocations: i386 object (gcc -m32 works here without libc headers since the
    /// sample includes none) and an i386 shared library linked without libc.
    @Test func i386ObjectAndLibrary() throws {
        let folder = try Fixtures.temporaryFolder("suture-elf-i386")
        let object = try Fixtures.compileFixture("elf_sample.c", flags: ["-m32", "-O2", "-fPIC", "-c"], in: folder)
        let elf = try ELFFile(path: object.path)
        #expect(elf.header.elfClass == .elf32 && elf.header.machine == .i386)
        let counts = try expectMatchesReadelf(object.path, file: elf)
        #expect(counts["relocations", default: 0] > 15)

        // REL keeps addends in the relocated field: compare with the bytes objdump dumps.
        let text = try #require(elf.section(named: ".text"))
        let textBytes = try Self.parseObjdumpHex(try Fixtures.check("objdump", ["-s", "-j", ".text", object.path]))
        let relocations = try elf.relocations(applyingTo: text)
        #expect(relocations.contains { $0.typeName == "R_386_GOTPC" })
        var checked = 0
        for r in relocations where r.fieldSize == 4 {
            let o = Int(r.offset)
            let field = UInt32(textBytes[o]) | UInt32(textBytes[o + 1]) << 8 | UInt32(textBytes[o + 2]) << 16 | UInt32(textBytes[o + 3]) << 24
            #expect(r.addend == Int64(Int32(bitPattern: field)), "\(r.typeName) at \(Hex.address(r.offset))")
            #expect(!r.hasExplicitAddend)
            checked += 1
        }
        #expect(checked > 10)
        #expect(relocations.contains { $0.typeName == "R_386_PLT32" && $0.addend == -4 })

        let library = try Fixtures.compileFixture(
            "elf_sample.c", flags: ["-m32", "-O2", "-shared", "-fPIC", "-nostdlib", "-Wl,--build-id"], in: folder)
        let shared = try ELFFile(path: library.path)
        let libraryCounts = try expectMatchesReadelf(library.path, file: shared)
        #expect(libraryCounts["segments", default: 0] >= 5)
        #expect(try shared.buildID()?.count == 20)
        // Dynamic REL entries read their addend through the segment mapping (r_offset is an address).
        let relative = try shared.relocations(applyingTo: shared.sections[0]).filter { $0.typeName == "R_386_RELATIVE" }
        #expect(!relative.isEmpty)
        for r in relative {
            let field = try shared.bytes(atAddress: r.offset, count: 4).load(as: UInt32.self, at: 0)
            #expect(r.addend == Int64(Int32(bitPattern: field)))
        }
    }

    /// `objdump -s` hex dump → bytes (the first section dumped).
    static func parseObjdumpHex(_ text: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        for line in text.split(separator: "\n") where line.hasPrefix(" ") {
            // " 0000 f30f1efa 4883ec08 e8000000 0048  ascii": the address, then 35 columns holding up
            // to four groups of hex, then the ASCII rendering (which must not be parsed).
            let body = line.dropFirst()
            guard let space = body.firstIndex(of: " ") else { continue }
            let columns = body[body.index(after: space)...].prefix(35).filter { $0 != " " }
            guard let parsed = Hex.parseBytes(String(columns)) else {
                throw Fixtures.Failure("objdump -s: cannot parse \(line)")
            }
            bytes += parsed
        }
        return bytes
    }
}
