import Symbols
import Testing
@testable import Targets

struct TargetSpecTests {
    @Test(arguments: [
        ("gdb:127.0.0.1:1234", TargetSpec.gdb(host: "127.0.0.1", port: 1234)),
        ("gdb:localhost:65535", .gdb(host: "localhost", port: 65535)),
        ("gdb:[::1]:9000", .gdb(host: "::1", port: 9000)),
        ("pid:42", .process(pid: 42)),
        ("kmem", .kmem(path: "/dev/kmem")),
        ("kmem:/tmp/k", .kmem(path: "/tmp/k")),
        ("mem", .mem(path: "/dev/mem")),
        ("mem:/tmp/m", .mem(path: "/tmp/m")),
        ("kcore", .kcore(path: "/proc/kcore")),
        ("kcore:/tmp/core.1", .kcore(path: "/tmp/core.1")),
        ("file:/tmp/a.out", .file(path: "/tmp/a.out")),
        ("file:rel/with:colon", .file(path: "rel/with:colon")),
        ("lab", .lab),
        ("local", .local),
    ])
    func parses(text: String, spec: TargetSpec) throws {
        #expect(try TargetSpec.parse(text) == spec)
        // The description parses back to the same spec.
        #expect(try TargetSpec.parse(spec.description) == spec)
    }

    @Test(arguments: [
        "", "gdb", "gdb:", "gdb:host", "gdb::1234", "gdb:host:0", "gdb:host:65536", "gdb:host:12ab",
        "gdb:::1:1234", "gdb:[::1", "gdb:[::1]1234", "pid", "pid:", "pid:0", "pid:-3", "pid:abc",
        "pid:99999999999", "file", "file:", "kmem:", "lab:x", "local:1", "tcp:1.2.3.4:5", "PID:1",
    ])
    func rejects(text: String) {
        let error = #expect(throws: TargetError.self) { try TargetSpec.parse(text) }
        guard case let .invalidSpec(quoted, reason)? = error else {
            Issue.record("expected invalidSpec for '\(text)', got \(String(describing: error))")
            return
        }
        #expect(quoted == text && !reason.isEmpty)
        #expect(error!.description.contains("gdb:HOST:PORT"))
    }
}


struct KernelSymbolsTests {
    @Test func fromASymbolIndexIgnoringModules() {
        let index = SymbolIndex([
            SymbolRecord(name: "linux_banner", address: 0xffff_ffff_8200_00a0, kind: "R", size: nil, module: nil, section: nil, isFunction: false),
            SymbolRecord(name: "phys_base", address: 0xffff_ffff_82a1_2010, kind: "D", size: nil, module: nil, section: nil, isFunction: false),
            SymbolRecord(name: "__start_notes", address: 0xffff_ffff_824c_1990, kind: "R", size: nil, module: nil, section: nil, isFunction: false),
            SymbolRecord(name: "__stop_notes", address: 0xffff_ffff_824c_1b88, kind: "R", size: nil, module: nil, section: nil, isFunction: false),
            SymbolRecord(name: "page_offset_base", address: 0xffff_ffff_c000_0000, kind: "d", size: nil, module: "fake", section: nil, isFunction: false),
        ])
        let symbols = KernelSymbols(index: index)
        #expect(symbols == KernelSymbols(linuxBanner: 0xffff_ffff_8200_00a0, startNotes: 0xffff_ffff_824c_1990,
                                         stopNotes: 0xffff_ffff_824c_1b88, physBase: 0xffff_ffff_82a1_2010, pageOffsetBase: nil))
    }

    @Test func releaseFromBanner() {
        #expect(KernelSymbols.release(fromBanner: "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12) #1 SMP") == "6.1.0-56-amd64")
        #expect(KernelSymbols.release(fromBanner: "Linux version") == nil)
        #expect(KernelSymbols.release(fromBanner: "Hello version 1 2") == nil)
    }
}
