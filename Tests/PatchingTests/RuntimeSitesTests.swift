import Foundation
import Testing
import ELF
import Symbols
import TestSupport
@testable import Patching

@Suite struct RuntimeSitesTests {
    /// The tables whose sites the lab recipe counted in nfs.ko's .text (step5b.out), with entry size.
    static let recipeTables: [(table: RuntimeSite.Table, section: String, stride: UInt64, recipeCount: Int)] = [
        (.mcountLoc, "__mcount_loc", 8, 520), (.returnSites, ".return_sites", 4, 668),
        (.retpolineSites, ".retpoline_sites", 4, 240), (.jumpTable, "__jump_table", 16, 212),
        (.staticCallSites, ".static_call_sites", 8, 229),
    ]

    @Test func nfsTableSitesMatchReadelf() throws {
        let path = try Fixtures.debianKernel().nfsKo.path
        let file = try ELFFile(path: path)
        let sites = try RuntimeSites(object: file)
        let oracle = try ReadelfOracle(path)
        let text = try #require(file.section(named: ".text"))

        for (table, section, stride, recipeCount) in Self.recipeTables {
            // readelf: the table's relocations at each entry's site field, pointing into .text.
            let entries = try #require(oracle.relocations[".rela" + section],
                                       "readelf lists no .rela for \(section)")
            let expected = Set(entries.filter { $0.offset % stride == 0 && $0.symbol == ".text" }.map { UInt64($0.target) })
            let found = sites.sites(in: text).filter { $0.table == table }
            #expect(Set(found.map(\.offset)) == expected, "\(section): sites differ from readelf's")
            #expect(found.count == expected.count, "\(section): duplicate sites")
            // The recipe counted the same (its numbers are the lab's reference for the live comparison).
            #expect(expected.count == recipeCount, "\(section): readelf finds \(expected.count), step5b.out says \(recipeCount)")
            // All sections together: every entry of the table is a site.
            let allEntries = entries.filter { $0.offset % stride == 0 }.count
            #expect(sites.counts[table] == allEntries, "\(section): \(sites.counts[table] ?? 0) sites, readelf has \(allEntries) entries")
        }
        #expect(sites.skippedEntries.isEmpty)
    }

    @Test func nfsSiteLengthsAreTheInstructionsObjdumpDecodes() throws {
        let path = try Fixtures.debianKernel().nfsKo.path
        let file = try ELFFile(path: path)
        let sites = try RuntimeSites(object: file)
        let text = try #require(file.section(named: ".text"))
        let lengths = try ReadelfOracle.instructionLengths(path, section: ".text")
        var checked = 0
        for site in sites.sites(in: text) where site.table != .relocation {
            let length = try #require(lengths[site.offset], "\(site) does not start an instruction per objdump")
            switch site.table {
            case .smpLocks: #expect(site.length == 1)
            case .altInstructions: #expect(site.length >= 1)
            default: #expect(site.length == length, "\(site): objdump decodes \(length) bytes")
            }
            checked += 1
        }
        #expect(checked > 1800)
    }

    @Test func nfsFlockRelocatedBytesAreMaskedButNotTheArticlesByte() throws {
        let path = try Fixtures.debianKernel().nfsKo.path
        let file = try ELFFile(path: path)
        let sites = try RuntimeSites(object: file)
        let text = try #require(file.section(named: ".text"))
        let flock = try #require(try file.symbols().first { $0.name == "nfs_flock" && $0.type == .function })
        let range = flock.value..<flock.value + flock.size
        let mask = sites.mask(section: text, range: range)
        #expect(mask.count == Int(flock.size))

        let oracle = try ReadelfOracle(path)
        let relocated = try #require(oracle.relocations[".rela.text"]).filter { range.contains($0.offset) }
        #expect(!relocated.isEmpty)
        var covered = Set<UInt64>()
        for entry in relocated {
            for byte in entry.offset..<entry.offset + UInt64(ReadelfOracle.fieldSize(entry.type)) {
                covered.insert(byte)
                #expect(mask[Int(byte - flock.value)] == 0, "nfs_flock+\(Hex.address(byte - flock.value)) (\(entry.type) \(entry.symbol)) is not masked")
            }
        }
        // The ftrace call at +0 is masked whole: its opcode byte becomes a NOP too.
        #expect(mask[0] == 0)
        #expect(sites.explain(section: text, offset: flock.value)?.table == .mcountLoc)
        // The article's byte: a plain je, never rewritten.
        let code = try file.data(of: text)
        #expect(code[Int(flock.value) + 0x2f] == 0x74)
        #expect(mask[0x2f] == 0xff)
        #expect(sites.explain(section: text, offset: flock.value + 0x2f) == nil)
        // Nothing beyond relocations and table sites is masked.
        let tableBytes = sites.sites(in: text, overlapping: range).filter { $0.table != .relocation }
            .flatMap { Array($0.range) }
        for (i, m) in mask.enumerated() where m == 0 {
            let offset = flock.value + UInt64(i)
            #expect(covered.contains(offset) || tableBytes.contains(offset))
        }
    }

    @Test func unexplainedDifferencesIgnoreRewrittenBytesOnly() throws {
        let file = try ELFFile(path: try Fixtures.debianKernel().nfsKo.path)
        let sites = try RuntimeSites(object: file)
        let text = try #require(file.section(named: ".text"))
        let flock = try #require(try file.symbols().first { $0.name == "nfs_flock" })
        let bytes = try file.data(of: text).view(offset: Int(flock.value), count: Int(flock.size)).bytes
        #expect(sites.unexplainedDifferences(fileBytes: bytes, liveBytes: bytes, section: text, startingAt: flock.value).isEmpty)
        // What the module loader and ftrace do: a NOP for the fentry call, a filled-in relocation.
        var live = bytes
        live.replaceSubrange(0..<5, with: [0x0f, 0x1f, 0x44, 0x00, 0x00])
        let relocation = try #require(try file.relocations(applyingTo: text).first { $0.offset > flock.value + 5 && $0.offset < flock.value + flock.size })
        live[Int(relocation.offset - flock.value)] ^= 0x5a
        #expect(sites.unexplainedDifferences(fileBytes: bytes, liveBytes: live, section: text, startingAt: flock.value).isEmpty)
        // The article's patch is not something the kernel does.
        live[0x2f] = 0x75
        #expect(sites.unexplainedDifferences(fileBytes: bytes, liveBytes: live, section: text, startingAt: flock.value) == [0x2f])
        #expect(sites.unexplainedDifferences(fileBytes: bytes, liveBytes: live.dropLast(2), section: text, startingAt: flock.value)
                == [0x2f, bytes.count - 2, bytes.count - 1])
    }

    @Test func alternativesTakeTheirLengthFromTheEntry() throws {
        let path = try Fixtures.debianKernel().module("net/netfilter/x_tables.ko").path
        let file = try ELFFile(path: path)
        let sites = try RuntimeSites(object: file)
        let oracle = try ReadelfOracle(path)
        let table = try ReadelfOracle.hexDump(path, section: ".altinstructions")
        let entries = try #require(oracle.relocations[".rela.altinstructions"]).filter { $0.offset % 12 == 0 }
        #expect(!entries.isEmpty)
        var expected: [String: Set<[UInt64]>] = [:]
        for entry in entries {
            expected[entry.symbol, default: []].insert([UInt64(entry.target), UInt64(table[Int(entry.offset) + 10])])
        }
        var found: [String: Set<[UInt64]>] = [:]
        for section in file.sections {
            let alt = sites.sites(in: section).filter { $0.table == .altInstructions }
            if !alt.isEmpty { found[section.name] = Set(alt.map { [$0.offset, UInt64($0.length)] }) }
        }
        #expect(found == expected)
    }

    @Test func paravirtAndLockSitesMatchReadelf() throws {
        let kernel = try Fixtures.debianKernel()
        // 8021q.ko has a paravirt site; af_key.ko lock prefixes.
        for (module, section, stride, table) in [("net/8021q/8021q.ko", ".parainstructions", UInt64(16), RuntimeSite.Table.paraInstructions),
                                                ("net/key/af_key.ko", ".smp_locks", 4, .smpLocks)] {
            let path = kernel.module(module).path
            let file = try ELFFile(path: path)
            let sites = try RuntimeSites(object: file)
            let oracle = try ReadelfOracle(path)
            let entries = try #require(oracle.relocations[".rela" + section]).filter { $0.offset % stride == 0 }
            let bytes = try ReadelfOracle.hexDump(path, section: section)
            #expect(!entries.isEmpty)
            var found: [RuntimeSite] = []
            for s in file.sections { found += sites.sites(in: s).filter { $0.table == table } }
            #expect(found.count == entries.count, "\(module) \(section)")
            for entry in entries {
                let sectionIndex = try #require(file.section(named: entry.symbol)).index
                let length = table == .smpLocks ? 1 : Int(bytes[Int(entry.offset) + 9])
                #expect(found.contains(RuntimeSite(section: sectionIndex, offset: UInt64(entry.target), length: length, table: table)),
                        "\(module): no \(section) site at \(entry.symbol)+\(Hex.address(UInt64(entry.target)))")
            }
        }
    }

    @Test func sharedLibraryDynamicRelocationsAreSites() throws {
        let library = try Fixtures.compileC("""
            extern int counter;
            int *where(void) { return &counter; }
            const char *names[] = { "a", "b" };
            void (*hook)(void) = 0;
            int call(void) { return ((int (*)(void))hook)(); }
            """, name: "dynrel", flags: ["-O2", "-shared", "-fPIC"])
        let file = try ELFFile(path: library.path)
        let sites = try RuntimeSites(object: file)
        let oracle = try ReadelfOracle(library.path)
        let dynamic = oracle.relocations.filter { $0.key.hasPrefix(".rela.dyn") || $0.key.hasPrefix(".rela.plt") }.flatMap(\.value)
        #expect(!dynamic.isEmpty)
        #expect(sites.counts[.relocation] == dynamic.count)
        for entry in dynamic {
            let section = try #require(file.sections.first { $0.isAllocated && $0.address <= entry.offset && entry.offset < $0.address + $0.size })
            let site = sites.explain(section: section, offset: entry.offset - section.address)
            #expect(site?.table == .relocation && site?.length == 8, "\(Hex.address(entry.offset)) in \(section.name)")
        }
    }

    @Test func badTableEntryIsATypedError() throws {
        // Point the first __mcount_loc relocation far outside .text: the error names the table and entry.
        let path = try Fixtures.debianKernel().nfsKo.path
        let original = try ELFFile(path: path)
        let rela = try #require(original.section(named: ".rela__mcount_loc"))
        var bytes = original.contents.bytes
        let addendAt = Int(rela.offset) + 16      // r_addend of entry 0
        withUnsafeBytes(of: Int64(0x7fff_0000).littleEndian) { bytes.replaceSubrange(addendAt..<addendAt + 8, with: $0) }
        let broken = try ELFFile(bytes: bytes, name: "broken-nfs.ko")
        #expect {
            _ = try RuntimeSites(object: broken)
        } throws: { error in
            let text = "\(error)"
            return text.contains("broken-nfs.ko") && text.contains("__mcount_loc") && text.contains(".text+0x7fff0000")
        }
    }

    /// The tables that have an output section of their own in vmlinux (vmlinux.lds.S puts the start
    /// and end symbols at its bounds), so their symbols can be made from the section headers: Debian's
    /// /boot/System.map is a placeholder and the real one is in the -dbg package.
    static let sectionBoundedTables = [(".parainstructions", "__parainstructions", "__parainstructions_end"),
                                       (".retpoline_sites", "__retpoline_sites", "__retpoline_sites_end"),
                                       (".return_sites", "__return_sites", "__return_sites_end"),
                                       (".altinstructions", "__alt_instructions", "__alt_instructions_end"),
                                       (".smp_locks", "__smp_locks", "__smp_locks_end")]

    static func sectionSymbols(_ file: ELFFile, slide: UInt64 = 0) throws -> SymbolIndex {
        var records: [SymbolRecord] = []
        for (section, start, end) in sectionBoundedTables {
            let s = try #require(file.section(named: section))
            records.append(SymbolRecord(name: start, address: s.address &+ slide, kind: "D"))
            records.append(SymbolRecord(name: end, address: s.address + s.size &+ slide, kind: "D"))
        }
        return SymbolIndex(records)
    }

    @Test func vmlinuxTablesFoundThroughSymbols() throws {
        let path = try Fixtures.debianVmlinux().path
        let file = try ELFFile(path: path)
        let sites = try RuntimeSites(vmlinux: file, symbols: try Self.sectionSymbols(file))
        let text = try #require(file.section(named: ".text"))
        let code = try file.data(of: text)
        let all = sites.sites(in: text)

        // Every .smp_locks site is a lock prefix.
        let locks = all.filter { $0.table == .smpLocks }
        #expect(locks.count > 1000)
        #expect(locks.allSatisfy { code[Int($0.offset)] == 0xf0 })

        // Every return site in .text is a jmp rel32 to one thunk; objdump agrees on a sample.
        let returns = all.filter { $0.table == .returnSites }
        #expect(returns.count > 40000)
        var targets = Set<UInt64>()
        for site in returns {
            #expect(code[Int(site.offset)] == 0xe9 && site.length == 5)
            let rel = try code.load(as: Int32.self, at: Int(site.offset) + 1)
            targets.insert(text.address + site.offset + 5 &+ UInt64(bitPattern: Int64(rel)))
        }
        #expect(targets.count == 1)
        for site in stride(from: 0, to: returns.count, by: returns.count / 5).map({ returns[$0] }) {
            let address = text.address + site.offset
            let dump = try Fixtures.check("objdump", ["-d", "--start-address=\(Hex.address(address))",
                                                      "--stop-address=\(Hex.address(address + 5))", path])
            #expect(dump.contains("jmp    \(Hex.address(targets.first!))"), "objdump at \(Hex.address(address)): \(dump)")
        }

        // Table entries: all accounted for (placed, or skipped as padding).
        for (section, table) in [(".altinstructions", RuntimeSite.Table.altInstructions), (".retpoline_sites", .retpolineSites),
                                 (".parainstructions", .paraInstructions)] {
            let s = try #require(file.section(named: section))
            let stride = table == .altInstructions ? 12 : table == .paraInstructions ? 16 : 4
            #expect((sites.counts[table] ?? 0) + (sites.skippedEntries[table] ?? 0) == Int(s.size) / stride, "\(section)")
            #expect((sites.counts[table] ?? 0) > 100)
        }

        // KASLR fields hold kernel addresses (sign-extended 32-bit ones, or 64-bit pointers).
        let kaslr = all.filter { $0.table == .kaslr }
        #expect(kaslr.count > 10000)
        for site in kaslr.prefix(2000) where site.length == 4 {
            let value = try code.load(as: Int32.self, at: Int(site.offset))
            #expect(UInt64(bitPattern: Int64(value)) >= 0xffff_ffff_8000_0000 || value >= 0, "\(site)")
        }
        let data = try #require(file.section(named: ".data"))
        let pointers = sites.sites(in: data).filter { $0.table == .kaslr && $0.length == 8 }
        #expect(pointers.count > 1000)
        let dataBytes = try file.data(of: data)
        for site in pointers.prefix(2000) {
            // A kernel pointer, or an early page-table entry (physical address | present, rw, accessed, dirty).
            let value = try dataBytes.load(as: UInt64.self, at: Int(site.offset))
            #expect(value >= 0xffff_ffff_8000_0000 || value & 0xfff == 0x063 || value & 0xfff == 0x067,
                    "\(Hex.address(data.address + site.offset)) holds \(Hex.address(value))")
        }

        // Live symbols carry the KASLR slide: the same sites come out once it is given.
        let slide: UInt64 = 0x2e00_0000
        let slid = try RuntimeSites(vmlinux: file, symbols: try Self.sectionSymbols(file, slide: slide), slide: Int64(slide))
        #expect(slid.counts == sites.counts)
    }
}
