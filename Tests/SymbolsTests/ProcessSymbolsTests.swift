import ELF
import Foundation
import Symbols
import Testing
import TestSupport

/// ProcessSymbols against real processes built by gcc: the oracles are the program's own idea of
/// where its functions are (it prints `&gate`, and `dlsym`'s answer for the library), and nm over
/// the file plus the mapping in /proc/PID/maps.
@Suite(.serialized) struct ProcessSymbolsTests {
    static func host(_ flags: [String] = [], in folder: URL? = nil) throws -> URL {
        try Fixtures.compileFixture("process_host.c", flags: ["-O0", "-g0", "-pthread"] + flags + ["-ldl"],
                                    in: folder ?? Fixtures.temporaryFolder("process-host"))
    }

    static func library() throws -> URL {
        try Fixtures.compileFixture("process_lib.c", flags: ["-O0", "-g0", "-fPIC", "-shared"])
    }

    /// `nm`'s value for `symbol` in `file`.
    static func nmValue(_ symbol: String, _ file: URL) throws -> UInt64 {
        let nm = try Fixtures.check("nm", [file.path])
        guard let line = nm.split(separator: "\n").first(where: { $0.hasSuffix(" " + symbol) }),
              let value = UInt64(line.split(separator: " ")[0], radix: 16) else { throw Fixtures.Failure("nm: no \(symbol) in \(file.path)") }
        return value
    }

    @Test func pieExecutableSymbolsCarryTheLoadBias() throws {
        let exe = try Self.host(["-fPIE", "-pie"])
        let program = try LiveProgram(exe)
        defer { program.stop() }
        let snapshot = try ProcessSymbols.snapshot(pid: program.pid)
        let gate = try snapshot.index.resolve(name: "gate")
        #expect(gate.module == nil)
        #expect(gate.isFunction)
        #expect(gate.address == program.printed["gate"], "the program's own &gate")
        #expect(gate.address == (try TargetFixtures.runtimeAddress(of: "gate", in: exe, pid: program.pid)).runtime)
        let main = try #require(snapshot.executable)
        #expect(main.path == exe.resolvingSymlinksInPath().path)
        #expect(main.bias != 0, "a PIE is loaded away from its link address 0")
        #expect(main.bias == gate.address - (try Self.nmValue("gate", exe)))
        #expect(main.source == .symtab)
        // The build-id readelf shows.
        let notes = try Fixtures.check("readelf", ["-n", exe.path])
        #expect(notes.contains("Build ID: \(try #require(main.buildID))"))
        // Every other symbol moved by the same bias; main_loop is where nm says.
        #expect(try snapshot.index.resolve(name: "main_loop").address == main.bias + (try Self.nmValue("main_loop", exe)))
        // Libraries are modules named by file name.
        #expect(snapshot.images.contains { $0.module?.hasPrefix("libc.so") == true })
        #expect(try snapshot.index.resolve(name: "printf").module?.hasPrefix("libc.so") == true)
    }

    @Test func nonPIEExecutableHasNoBias() throws {
        let exe = try Self.host(["-fno-pie", "-no-pie"])
        let header = try Fixtures.check("readelf", ["-h", exe.path])
        #expect(header.contains("EXEC (Executable file)"), "gcc built a non-PIE executable")
        let program = try LiveProgram(exe)
        defer { program.stop() }
        let snapshot = try ProcessSymbols.snapshot(pid: program.pid)
        #expect(snapshot.executable?.bias == 0)
        let gate = try snapshot.index.resolve(name: "gate")
        #expect(gate.address == (try Self.nmValue("gate", exe)))
        #expect(gate.address == program.printed["gate"])
    }

    @Test func sharedLibraryOfOurOwnIsAModule() throws {
        let library = try Self.library()
        let exe = try Self.host()
        let program = try LiveProgram(exe, arguments: [library.path])
        defer { program.stop() }
        let snapshot = try ProcessSymbols.snapshot(pid: program.pid)
        let module = library.lastPathComponent
        let parse = try snapshot.index.resolve(name: "parse_header", module: module)
        #expect(parse.address == program.printed["parse"], "dlsym's answer")
        let image = try #require(snapshot.images.first { $0.module == module })
        #expect(!image.isMainExecutable)
        #expect(parse.address == image.bias + (try Self.nmValue("parse_header", library)))
        // Both spellings of a module-qualified expression land there.
        for text in ["\(module):parse_header+0x4", "parse_header [\(module)]+0x4"] {
            let resolved = try AddressExpression.parse(text).resolve(in: snapshot.index)
            #expect(resolved.address == parse.address + 4, "\(text)")
            #expect(resolved.symbol?.name == "parse_header")
        }
        // Data in the library: lib_banner is an object in its .rodata, with the bytes nm and the file agree on.
        let banner = try snapshot.index.resolve(name: "lib_banner", module: module)
        #expect(!banner.isFunction)
        #expect(banner.kind == "R")
        #expect(snapshot.image(containing: banner.address)?.module == module)
    }

    @Test func stringsAreFoundInReadOnlyDataAtLiveAddresses() throws {
        let library = try Self.library()
        let exe = try Self.host()
        let program = try LiveProgram(exe, arguments: [library.path])
        defer { program.stop() }
        let snapshot = try ProcessSymbols.snapshot(pid: program.pid)
        // lib_banner is a named object holding the text: nm's address for it, moved by the bias.
        let found = ProcessSymbols.occurrences(of: Array("libparse-1".utf8), pid: program.pid, images: snapshot.images)
        let banner = try snapshot.index.resolve(name: "lib_banner", module: library.lastPathComponent)
        #expect(found.map(\.address) == [banner.address])
        #expect(found.first?.module == library.lastPathComponent && found.first?.section == ".rodata")
        // The executable's string literal: the live bytes there are the text (read through /proc/PID/mem).
        let hello = try #require(ProcessSymbols.occurrences(of: Array("hello-world".utf8), pid: program.pid, images: snapshot.images).first)
        #expect(hello.module == nil && hello.path == exe.resolvingSymlinksInPath().path)
        let mem = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/\(program.pid)/mem"))
        defer { try? mem.close() }
        try mem.seek(toOffset: hello.address)
        #expect(try mem.read(upToCount: 11) == Data("hello-world".utf8))
        #expect(ProcessSymbols.occurrences(of: Array("no such text anywhere 42".utf8), pid: program.pid, images: snapshot.images).isEmpty)
    }

    @Test func strippedExecutableIsNamedAndAGivenSymbolFileFillsIn() throws {
        let folder = try Fixtures.temporaryFolder("process-stripped")
        let full = try Self.host(in: folder)
        let stripped = folder.appendingPathComponent("host-stripped")
        try Fixtures.check("strip", ["-o", stripped.path, full.path])
        let program = try LiveProgram(stripped)
        defer { program.stop() }

        let bare = try ProcessSymbols.snapshot(pid: program.pid)
        #expect(bare.executable?.source == .dynamicOnly)
        #expect(bare.notes.contains { $0.contains("\(stripped.path) is stripped") && $0.contains("--elf") }, "\(bare.notes)")
        #expect(throws: SymbolError.self) { try bare.index.resolve(name: "gate", module: nil) }

        // strip keeps the build-id, so the unstripped file is recognised as the same build.
        let given = try ProcessSymbols.snapshot(pid: program.pid, options: .init(symbolFiles: [full.path]))
        #expect(given.executable?.source == .given(path: full.path))
        #expect(try given.index.resolve(name: "gate").address == program.printed["gate"])
    }

    @Test func debugFileIsFoundThroughTheBuildID() throws {
        let folder = try Fixtures.temporaryFolder("process-debug")
        let full = try Self.host(in: folder)
        let stripped = folder.appendingPathComponent("host-stripped")
        try Fixtures.check("strip", ["-o", stripped.path, full.path])
        let buildID = try #require(try ELFFile(path: full.path).buildID()).map { String(format: "%02x", $0) }.joined()
        // The layout Debian's -dbgsym packages install under /usr/lib/debug, in a folder of our own.
        let root = folder.appendingPathComponent("debug")
        let dir = root.appendingPathComponent(".build-id/" + buildID.prefix(2))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let debug = dir.appendingPathComponent(buildID.dropFirst(2) + ".debug")
        try Fixtures.check("objcopy", ["--only-keep-debug", full.path, debug.path])

        let program = try LiveProgram(stripped)
        defer { program.stop() }
        let snapshot = try ProcessSymbols.snapshot(pid: program.pid, options: .init(debugDirectories: [root.path]))
        #expect(snapshot.executable?.source == .debugFile(path: debug.path))
        #expect(try snapshot.index.resolve(name: "gate").address == program.printed["gate"])
        #expect(try snapshot.index.resolve(name: "hold").address == program.printed["hold"])
    }

    @Test func symbolFileOfAnotherBuildIsRefused() throws {
        let other = try Self.host(["-DLIMIT=9"])
        let program = try LiveProgram(try Self.host())
        defer { program.stop() }
        #expect {
            try ProcessSymbols.snapshot(pid: program.pid, options: .init(symbolFiles: [other.path]))
        } throws: { error in
            guard case let ProcessSymbolsError.symbolFileMismatch(file, _, mapped) = error else { return false }
            return file == other.path && mapped.contains { $0.hasPrefix(program.executable.path) } && "\(error)".contains("a different build?")
        }
    }

    @Test func deletedExecutableIsReadThroughMapFiles() throws {
        let folder = try Fixtures.temporaryFolder("process-deleted")
        let exe = try Self.host(in: folder)
        let program = try LiveProgram(exe)
        defer { program.stop() }
        // A daemon whose package was upgraded underneath it: the path now names nothing.
        try FileManager.default.removeItem(at: exe)
        let maps = try String(contentsOfFile: "/proc/\(program.pid)/maps", encoding: .utf8)
        #expect(maps.contains("\(exe.path) (deleted)"))
        let snapshot = try ProcessSymbols.snapshot(pid: program.pid)
        #expect(snapshot.executable?.path == exe.path)
        #expect(try snapshot.index.resolve(name: "gate").address == program.printed["gate"])
    }

    @Test func goneProcessIsNamed() throws {
        let program = try LiveProgram(try Self.host())
        let pid = program.pid
        program.stop()
        #expect(throws: ProcessSymbolsError.noSuchProcess(pid: pid)) { try ProcessSymbols.snapshot(pid: pid) }
    }

    @Test func mapsLinesParse() throws {
        let text = """
            55d0c6a00000-55d0c6a01000 r--p 00000000 fd:01 1234                       /usr/bin/x (deleted)
            55d0c6a01000-55d0c6a02000 r-xp 00001000 fd:01 1234                       /usr/bin/x (deleted)
            7ffd1c3b2000-7ffd1c3d3000 rw-p 00000000 00:00 0                          [stack]
            7f00aa000000-7f00aa001000 rw-p 00000000 00:00 0
            """
        let files = try ProcessSymbols.parseMaps(text, file: "maps")
        #expect(files.count == 2)
        #expect(files[1] == ProcessSymbols.Mapping(start: 0x55d0c6a01000, end: 0x55d0c6a02000, offset: 0x1000, permissions: "r-xp",
                                                   inode: 1234, path: "/usr/bin/x", isDeleted: true))
        #expect(files[1].isExecutable && !files[0].isExecutable)
        #expect(try ProcessSymbols.parseMaps(text, file: "maps", includeAnonymous: true).count == 4)
        #expect(throws: ProcessSymbolsError.malformedMaps(file: "maps", line: 2, reason: "bad address range, offset or inode in \"zz-10 r-xp 0 0:0 1 /x\"")) {
            try ProcessSymbols.parseMaps("10-20 r-xp 0 0:0 1 /x\nzz-10 r-xp 0 0:0 1 /x", file: "maps")
        }
    }
}
