import ELF
import Foundation
import Symbols
import Testing
import TestSupport

/// `SymbolIndex(elf:)` against nm, objdump and gdb on gcc-built programs and Debian's nfs.ko.
@Suite struct ELFSymbolIndexTests {
    /// nm's lines as comparable text: "address letter name size" (size "-" when nm prints none).
    static func nmLines(_ arguments: [String]) throws -> [String] {
        try SymbolsFixtures.lines(Fixtures.check("nm", arguments)).map { line in
            let f = line.split(separator: " ")
            return f.count == 4 ? "\(f[0]) \(f[2]) \(f[3]) \(UInt64(f[1], radix: 16)!)" : "\(f[0]) \(f[1]) \(f[2]) -"
        }.sorted()
    }

    /// Our records in the same shape; sizes nm knows must be equal, the others are inferred by us.
    static func ourLines(_ index: SymbolIndex, knownSizes: Set<String>) -> [String] {
        index.records.map { r in
            let key = "\(Hex.padded(r.address)) \(r.kind) \(r.name)"
            return key + " " + (knownSizes.contains(key) ? (r.size.map { "\($0)" } ?? "nil") : "-")
        }.sorted()
    }

    static func knownSizes(_ lines: [String]) -> Set<String> {
        Set(lines.filter { !$0.hasSuffix(" -") }.map { String($0[..<$0.lastIndex(of: " ")!]) })
    }

    @Test func executableSymbolsEqualNm() throws {
        let program = try SystemMapTests.buildProgram()
        let index = try SymbolIndex(elf: ELFFile(path: program.executable.path))
        let nm = try Self.nmLines(["-S", "--defined-only", program.executable.path])
        #expect(Self.ourLines(index, knownSizes: Self.knownSizes(nm)) == nm)
        #expect(index.records.allSatisfy { $0.section == nil && $0.module == nil })
        #expect(try index.resolve(name: "main").isFunction)
        #expect(try !index.resolve(name: "counter").isFunction)
    }

    /// Stripped of .symtab, a shared library still has .dynsym: those symbols, as `nm -D` lists them.
    @Test func strippedLibraryUsesDynsym() throws {
        let folder = try Fixtures.temporaryFolder("suture-dynsym")
        let library = try Fixtures.compileC("""
            int shared_counter = 7;
            int shared_table[32];
            const int shared_constant = 3;
            int shared_add(int a, int b) { return a + b + shared_counter + shared_table[a & 31]; }
            __attribute__((weak)) int shared_weak(void) { return shared_constant; }
            """, name: "libdemo", flags: ["-O2", "-shared", "-fPIC"], in: folder)
        try Fixtures.check("strip", ["--strip-all", library.path])
        let elf = try ELFFile(path: library.path)
        #expect(try elf.symbols().isEmpty)
        let index = try SymbolIndex(elf: elf)
        let nm = try Self.nmLines(["-D", "-S", "--defined-only", library.path])
        #expect(Self.ourLines(index, knownSizes: Self.knownSizes(nm)) == nm)
        #expect(try index.resolve(name: "shared_weak").kind == "W")
    }

    /// Address → symbol+offset from the ELF index (real sizes) against gdb, including the padding
    /// between functions, where gdb finds no symbol.
    @Test func symbolizeAgreesWithGdbIncludingPadding() throws {
        let program = try SystemMapTests.buildProgram()
        let index = try SymbolIndex(elf: ELFFile(path: program.executable.path))
        let nm = try SystemMapTests.nmDefined(program.executable)
        var addresses: [UInt64] = []
        for symbol in nm {
            guard let size = symbol.size, nm.filter({ $0.address == symbol.address }).count == 1 else { continue }
            addresses += [symbol.address, symbol.address + size / 2, symbol.address + size - 1, symbol.address + size]
        }
        try #require(addresses.count >= 20)
        let answers = try GDB.infoSymbol(addresses, file: program.executable)
        #expect(answers.contains(nil), "expected some padding between functions")
        for (address, answer) in zip(addresses, answers) {
            let hit = index.symbolize(address)
            let ours = hit.map { GDB.Answer(name: GDB.printName($0.symbol.name), offset: $0.offset) }
            #expect(ours == answer, "\(Hex.address(address))")
        }
    }

    @Test func duplicateStaticFunctionsFromSymtab() throws {
        let folder = try Fixtures.temporaryFolder("suture-dups-elf")
        let program = try SymbolsFixtures.twoScalesProgram(in: folder)
        let expected = try SystemMapTests.nmDefined(program).filter { $0.name == "scale" }
        try #require(expected.count == 2)

        let index = try SymbolIndex(elf: ELFFile(path: program.path))
        let found = index.symbols(named: "scale")
        #expect(found.map(\.address) == expected.map(\.address))
        #expect(found.map(\.size) == expected.map(\.size))
        #expect(try index.resolve(name: "scale", ordinal: 2).address == expected[1].address)
        #expect(throws: SymbolError.self) { try index.resolve(name: "scale") }
    }

    /// Debian's nfs.ko: a relocatable object, so every address is relative to its section. Names,
    /// letters and sizes equal nm's; sections equal objdump's.
    @Test func debianNfsModule() throws {
        let kernel = try Fixtures.debianKernel()
        let path = kernel.nfsKo.path
        let index = try SymbolIndex(elf: ELFFile(path: path), module: "nfs")
        let nm = try Self.nmLines(["-S", "--defined-only", path])
        #expect(Self.ourLines(index, knownSizes: Self.knownSizes(nm)) == nm)
        #expect(index.records.allSatisfy { $0.module == "nfs" })

        // objdump -t: "0000000000009260 g     F .text\t000000000000007a nfs_flock"
        var sections: [String: Set<String>] = [:]
        for line in SymbolsFixtures.lines(try Fixtures.check("objdump", ["-t", path])) where line.contains("\t") {
            let parts = line.split(separator: "\t")
            let name = String(parts[1].split(separator: " ").last!)
            let section = String(parts[0].split(separator: " ").last!)
            sections[name, default: []].insert(section)
        }
        for record in index.records {
            #expect(sections[record.name]?.contains(record.section ?? "*ABS*") == true, "\(record.name) in \(record.section ?? "-")")
        }

        // The article's function and its .cold part, and the patch site.
        let flock = try index.resolve(name: "nfs_flock", module: "nfs")
        #expect(flock.section == ".text" && flock.isFunction)
        let cold = try index.resolve(name: "nfs_flock.cold")
        #expect(cold.section == ".text.unlikely")
        let site = try AddressExpression.parse("nfs_flock [nfs]+0x2f").resolve(in: index)
        #expect(site.address == flock.address + 0x2f && site.location == "nfs_flock+0x2f")
        #expect(index.symbolize(flock.address + 0x2f, section: ".text")?.symbol.name == "nfs_flock")
        #expect(index.function(containing: cold.address + 1, section: ".text.unlikely")?.name == "nfs_flock.cold")
        // Section-relative addresses are not absolute ones.
        #expect(index.symbolize(flock.address + 0x2f) == nil)

        // Same-named statics: as many as nm lists, numbered in section-offset order.
        let names = try SymbolsFixtures.lines(Fixtures.check("nm", ["--defined-only", path])).map { String($0.split(separator: " ")[2]) }
        let duplicates = Dictionary(grouping: names, by: { $0 }).filter { $0.value.count > 1 }
        try #require(!duplicates.isEmpty)
        for (name, all) in duplicates {
            #expect(index.symbols(named: name).count == all.count, "\(name)")
        }
    }
}
