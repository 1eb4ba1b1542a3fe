import Foundation
import Testing
import TestSupport

/// `suture disasm` and `suture locate`, run as a binary, against objdump -dr and readelf on the same
/// files: gcc-built objects, Debian's nfs.ko and the stripped vmlinux.
@Suite struct DisasmCommandTests {
    // MARK: Oracles

    /// readelf -sW: value, size, section index of one symbol.
    static func symbol(_ name: String, in file: URL) throws -> (value: UInt64, size: UInt64, section: Int) {
        for line in try Fixtures.check("readelf", ["-sW", file.path]).split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 8, f[7] == name, let value = UInt64(f[1], radix: 16), let size = UInt64(f[2]),
                  let section = Int(f[6]) else { continue }
            return (value, size, section)
        }
        throw Fixtures.Failure("readelf: no symbol \(name) in \(file.path)")
    }

    /// readelf -SW: file offset of a section by index.
    static func sectionOffset(_ index: Int, in file: URL) throws -> UInt64 {
        for line in try Fixtures.check("readelf", ["-SW", file.path]).split(separator: "\n") {
            guard let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]"),
                  Int(line[line.index(after: open)..<close].trimmingCharacters(in: .whitespaces)) == index else { continue }
            let f = line[line.index(after: close)...].split(separator: " ")
            if let offset = UInt64(f[3], radix: 16) { return offset }
        }
        throw Fixtures.Failure("readelf: no section \(index) in \(file.path)")
    }

    static let prefixWords: Set<String> = ["bnd", "notrack", "cs", "ds", "lock", "rep", "repz", "repnz", "data16", "rex.W"]

    /// objdump's listing against ours: address and byte columns, continuation and relocation lines
    /// exactly; the mnemonic up to AT&T size suffixes; every `hex <symbol+offset>` objdump shows.
    static func differences(ours: [String], objdump theirs: [String]) -> [String] {
        var problems: [String] = []
        if ours.count != theirs.count { problems.append("\(ours.count) lines, objdump \(theirs.count)") }
        for (a, b) in zip(ours, theirs) where problems.count < 20 {
            let x = a.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            let y = b.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            guard y.count == 3, !b.hasPrefix("\t") else {
                if a != b { problems.append("ours    \(a.debugDescription)\nobjdump \(b.debugDescription)") }
                continue
            }
            guard x.count == 3, x[0] == y[0], x[1] == y[1] else {
                problems.append("ours    \(a.debugDescription)\nobjdump \(b.debugDescription)")
                continue
            }
            var words = y[2].split(separator: " ").map(String.init)
            while words.count > 1, prefixWords.contains(words[0]) { words.removeFirst() }
            let theirs = words.first ?? "", ours = x[2].split(separator: " ").first.map(String.init) ?? ""
            var same = ours == theirs || (ours.count == theirs.count + 1 && ours.hasPrefix(theirs) && "bwlq".contains(ours.last!))
                || (x[1].hasPrefix("66 90 ") && ours == "nop" && theirs == "xchg")
            var rest = Substring(y[2])
            while let open = rest.firstIndex(of: "<"), let close = rest[open...].firstIndex(of: ">") {
                let start = rest[..<open].dropLast().lastIndex(where: { !$0.isHexDigit }).map { rest.index(after: $0) } ?? rest.startIndex
                if !x[2].contains(rest[start...close]) { same = false }
                rest = rest[rest.index(after: close)...]
            }
            if !same { problems.append("ours    \(a.debugDescription)\nobjdump \(b.debugDescription)") }
        }
        return problems
    }

    static func objdumpFunction(_ file: URL, start: UInt64, size: UInt64, extra: [String] = []) throws -> String {
        try Fixtures.check("objdump", ["-dr"] + extra + ["--start-address=0x" + String(start, radix: 16),
                                                        "--stop-address=0x" + String(start + size, radix: 16), file.path])
    }

    // MARK: disasm

    @Test("disasm: every function of a gcc object equals objdump -dr (addresses, bytes, relocations)",
          arguments: ["classify", "dispatch", "sum", "tail", "big", "through_pointer"])
    func gccObject(function: String) throws {
        let object = try Fixtures.compileFixture("disasm_branches.c", flags: ["-O2", "-c"])
        let symbol = try Self.symbol(function, in: object)
        let run = try Fixtures.suture(["disasm", object.path, function])
        try #require(run.status == 0, Comment(rawValue: run.stderr))
        let objdump = try Self.objdumpFunction(object, start: symbol.value, size: symbol.size, extra: ["-j", ".text"])
        let ours = run.stdout.split(separator: "\n").map(String.init)
        // objdump's header line for the function.
        let header = String(repeating: "0", count: 16 - String(symbol.value, radix: 16).count)
            + String(symbol.value, radix: 16) + " <\(function)>:"
        #expect(ours.first == header)
        #expect(objdump.contains(header))
        let problems = Self.differences(ours: Array(ours.dropFirst()), objdump: ObjdumpListing.bodyLines(objdump))
        #expect(problems.isEmpty, Comment(rawValue: problems.joined(separator: "\n")))
    }

    @Test("disasm nfs.ko nfs_flock equals objdump -dr, in AT&T and Intel syntax", arguments: [false, true])
    func nfsFlock(intel: Bool) throws {
        let nfs = try Fixtures.debianKernel().nfsKo
        let symbol = try Self.symbol("nfs_flock", in: nfs)
        let run = try Fixtures.suture(["disasm", nfs.path, "nfs_flock"] + (intel ? ["--intel"] : []))
        try #require(run.status == 0, Comment(rawValue: run.stderr))
        let objdump = try Self.objdumpFunction(nfs, start: symbol.value, size: symbol.size,
                                               extra: ["-j", ".text"] + (intel ? ["-M", "intel"] : []))
        let ours = run.stdout.split(separator: "\n").map(String.init)
        #expect(ours.first == "0000000000009260 <nfs_flock>:")
        let problems = Self.differences(ours: Array(ours.dropFirst()), objdump: ObjdumpListing.bodyLines(objdump))
        #expect(problems.isEmpty, Comment(rawValue: problems.joined(separator: "\n")))
        #expect(run.stdout.contains("    928f:\t74 39                \tje     92ca <nfs_flock+0x6a>\n"))
        #expect(run.stdout.contains("\t\t\t92d6: R_X86_64_PLT32\t__x86_return_thunk-0x4\n"))
    }

    @Test("disasm of the stripped vmlinux through a System.map, and through a KASLR kallsyms")
    func strippedVmlinux() throws {
        let vmlinux = try Fixtures.debianVmlinux()
        let folder = try Fixtures.temporaryFolder("e2e-disasm")
        defer { try? FileManager.default.removeItem(at: folder) }
        // startup_64 opens .text at 0xffffffff81000000; secondary_startup_64 follows at +0x70.
        let map = folder.appendingPathComponent("System.map")
        try "ffffffff81000000 T _text\nffffffff81000000 T startup_64\nffffffff81000070 T secondary_startup_64\n"
            .write(to: map, atomically: true, encoding: .utf8)
        let run = try Fixtures.suture(["disasm", vmlinux.path, "startup_64", "--system-map", map.path])
        try #require(run.status == 0, Comment(rawValue: run.stderr))
        let objdump = try Self.objdumpFunction(vmlinux, start: 0xffff_ffff_8100_0000, size: 0x70)
        let ours = run.stdout.split(separator: "\n").map(String.init)
        #expect(ours.first == "ffffffff81000000 <startup_64>:")
        let theirs = ObjdumpListing.bodyLines(objdump)
        #expect(ours.count - 1 == theirs.count)
        for (a, b) in zip(ours.dropFirst(), theirs) {
            #expect(a.split(separator: "\t").prefix(2) == b.split(separator: "\t").prefix(2), "\(a) vs \(b)")
        }

        // The same code in a kernel slid by 0x19000000: same bytes, addresses moved.
        let kallsyms = folder.appendingPathComponent("kallsyms")
        try "ffffffff9a000000 T _text\nffffffff9a000000 T startup_64\nffffffff9a000070 T secondary_startup_64\n"
            .write(to: kallsyms, atomically: true, encoding: .utf8)
        let slid = try Fixtures.suture(["disasm", vmlinux.path, "startup_64", "--kallsyms", kallsyms.path])
        try #require(slid.status == 0, Comment(rawValue: slid.stderr))
        let slidLines = slid.stdout.split(separator: "\n").map(String.init)
        #expect(slidLines.first?.hasPrefix("ffffffff9a000000 <startup_64>:") == true)
        #expect(slidLines.first?.contains("KASLR slide 0x19000000") == true)
        for (a, b) in zip(slidLines.dropFirst(), theirs) {
            let x = a.split(separator: "\t"), y = b.split(separator: "\t")
            #expect(x.count > 1 && y.count > 1 && x[1] == y[1])
            #expect(UInt64(x[0].dropLast(), radix: 16).map { $0 - 0x1900_0000 } == UInt64(y[0].dropLast(), radix: 16))
        }
    }

    @Test("disasm refuses what it cannot show, saying why")
    func disasmErrors() throws {
        let object = try Fixtures.compileFixture("disasm_branches.c", flags: ["-O2", "-c"])
        let missing = try Fixtures.suture(["disasm", object.path, "no_such_function"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no_such_function"), "\(missing.stderr)")
        let folder = try Fixtures.temporaryFolder("e2e-disasm")
        defer { try? FileManager.default.removeItem(at: folder) }
        let kallsyms = folder.appendingPathComponent("kallsyms")
        try "ffffffffc03b2260 t classify\t[x]\n".write(to: kallsyms, atomically: true, encoding: .utf8)
        let relocatable = try Fixtures.suture(["disasm", object.path, "classify", "--kallsyms", kallsyms.path])
        #expect(relocatable.status == 1)
        #expect(relocatable.stderr.contains("relocatable object"), "\(relocatable.stderr)")
        let notELF = try Fixtures.suture(["disasm", kallsyms.path, "classify"])
        #expect(notELF.status == 1)
        #expect(notELF.stderr.contains(kallsyms.path), "\(notELF.stderr)")
    }

    // MARK: locate

    /// The article's arithmetic on 6.1: nfs_flock's .text offset plus its value is its place in the
    /// file; +0x2f there holds 74 39; the live address is kallsyms' nfs_flock + 0x2f.
    @Test("locate nfs_flock+0x2f in nfs.ko: offsets, 74 39 je, boundary, live address")
    func locateNfsFlock() throws {
        let nfs = try Fixtures.debianKernel().nfsKo
        let folder = try Fixtures.temporaryFolder("e2e-locate")
        defer { try? FileManager.default.removeItem(at: folder) }
        let kallsyms = folder.appendingPathComponent("kallsyms")
        // The lab's real line (LAB.md), among neighbours.
        try "ffffffffc03b2100 t do_unlk\t[nfs]\nffffffffc03b2260 t nfs_flock\t[nfs]\nffffffffc03b22e0 t nfs_lock\t[nfs]\n"
            .write(to: kallsyms, atomically: true, encoding: .utf8)

        let symbol = try Self.symbol("nfs_flock", in: nfs)
        let sectionOffset = try Self.sectionOffset(symbol.section, in: nfs)
        let functionOffset = sectionOffset + symbol.value
        let file = try Data(contentsOf: nfs)
        #expect(Array(file[Int(functionOffset + 0x2f)..<Int(functionOffset + 0x31)]) == [0x74, 0x39])

        let run = try Fixtures.suture(["locate", "nfs_flock+0x2f", "--object", nfs.path, "--kallsyms", kallsyms.path, "--json"])
        try #require(run.status == 0, Comment(rawValue: run.stderr))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        let hex = { (value: UInt64) in "0x" + String(value, radix: 16) }
        #expect(json["section"] as? String == ".text")
        #expect(json["sectionFileOffset"] as? String == hex(sectionOffset))
        #expect(json["symbolValue"] as? String == hex(symbol.value))
        #expect(json["functionFileOffset"] as? String == hex(functionOffset))
        #expect(json["instructionFileOffset"] as? String == hex(functionOffset + 0x2f))
        #expect(json["sectionOffset"] as? String == hex(symbol.value + 0x2f))
        #expect(json["onBoundary"] as? Bool == true)
        #expect(json["liveAddress"] as? String == "0xffffffffc03b228f")
        #expect(json["module"] as? String == "nfs")
        let instruction = try #require(json["instruction"] as? [String: Any])
        #expect(instruction["bytes"] as? String == "74 39")
        #expect(instruction["mnemonic"] as? String == "je")
        #expect((instruction["text"] as? String)?.contains("92ca <nfs_flock+0x6a>") == true)

        let text = try Fixtures.suture(["locate", "nfs_flock+0x2f", "--object", nfs.path, "--kallsyms", kallsyms.path])
        #expect(text.status == 0)
        #expect(text.stdout.contains("= file offset \(hex(functionOffset))"), "\(text.stdout)")
        #expect(text.stdout.contains("= \(hex(functionOffset + 0x2f))"), "\(text.stdout)")
        #expect(text.stdout.contains("74 39  je     92ca <nfs_flock+0x6a>"), "\(text.stdout)")
        #expect(text.stdout.contains("= 0xffffffffc03b228f"), "\(text.stdout)")
    }

    @Test("locate inside an instruction says so; a symbol missing from kallsyms is an error")
    func locateOffBoundary() throws {
        let nfs = try Fixtures.debianKernel().nfsKo
        let folder = try Fixtures.temporaryFolder("e2e-locate")
        defer { try? FileManager.default.removeItem(at: folder) }
        let kallsyms = folder.appendingPathComponent("kallsyms")
        try "ffffffffc03b2260 t nfs_flock\t[nfs]\n".write(to: kallsyms, atomically: true, encoding: .utf8)

        let inside = try Fixtures.suture(["locate", "nfs_flock+0x30", "--object", nfs.path, "--kallsyms", kallsyms.path])
        #expect(inside.status == 0, "\(inside.stderr)")
        #expect(inside.stdout.contains("NO: +0x30 is inside the instruction at +0x2f"), "\(inside.stdout)")

        let absent = try Fixtures.suture(["locate", "nfs_lock+0x10", "--object", nfs.path, "--kallsyms", kallsyms.path])
        #expect(absent.status == 1)
        #expect(absent.stderr.contains("nfs_lock [nfs]"), "\(absent.stderr)")
        #expect(absent.stderr.contains(kallsyms.path), "\(absent.stderr)")
    }
}
