import Foundation
import Testing
import TestSupport
@testable import Lab

/// Test helpers: every VM a test starts lives in its own run folder under /tmp (short enough for
/// unix socket paths, apart from a lab the developer may have up) and is brought down on every
/// path out of the test.
enum LabHarness {
    /// Paths using the shared cache (fetched by `make fetch`) and a fresh run folder.
    static func paths() throws -> LabPaths {
        let run = try Fixtures.temporaryFolder("suture-lab")
        return LabPaths(cache: Fixtures.cacheFolder.path, runFolder: run.path)
    }

    /// Boots a VM, runs `body`, and downs the VM whatever happens; then checks nothing is left:
    /// no QEMU process (in /proc) and no state file.
    static func withLab<T>(_ options: LabOptions, pickPort: (() throws(LabError) -> UInt16)? = nil,
                           _ body: (LabVM, LabState) throws -> T) throws -> T {
        let vm = LabVM(paths: try paths())
        defer { try? FileManager.default.removeItem(atPath: vm.paths.runFolder) }
        var started: LabState?
        defer {
            // Runs on success and on failure: never leave a QEMU behind.
            _ = try? vm.down()
            if let pid = started?.qemu.pid { ProcessIdentity(pid: pid, startTime: 0).reapIfChild() }
        }
        let state = try pickPort.map { picker throws(LabError) in
            try vm.up(options, progress: { _ in }, pickPort: picker)
        } ?? vm.up(options)
        started = state
        let result: T
        do {
            result = try body(vm, state)
        } catch {
            // A VM that went away mid-test (guest panic, QEMU crash) says why only on its console.
            throw Fixtures.Failure("\(error)\n--- QEMU output and the guest console's last lines ---\n"
                                   + ((try? String(contentsOfFile: vm.paths.qemuOutput, encoding: .utf8)) ?? "")
                                   + vm.consoleTail(lines: 40))
        }
        #expect(try vm.down() == true)
        expectGone(state.qemu, vm: vm)
        return result
    }

    /// The QEMU process is gone from /proc and the run folder has no state file.
    static func expectGone(_ qemu: ProcessIdentity, vm: LabVM, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!FileManager.default.fileExists(atPath: "/proc/\(qemu.pid)"),
                "QEMU pid \(qemu.pid) still in /proc", sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: vm.paths.stateFile),
                "state file left behind", sourceLocation: sourceLocation)
        #expect(qemuProcesses(in: vm.paths.runFolder).isEmpty, "a QEMU using \(vm.paths.runFolder) still runs",
                sourceLocation: sourceLocation)
    }

    /// Pids of live (non-zombie) processes whose command line mentions `folder`: QEMUs started
    /// for that run folder.
    static func qemuProcesses(in folder: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                  let stat = ProcessStat.read(pid: pid), stat.state != "Z" else { return false }
            let text = String(decoding: cmdline.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return text.contains("qemu-system") && text.contains(folder)
        }
    }

    /// A TCP socket listening on a loopback port, so QEMU cannot bind that port. Close `fd` after.
    static func occupiedPort() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let result = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(fd, socketAddress, length) == 0 && listen(fd, 1) == 0 ? getsockname(fd, socketAddress, &length) : -1
            }
        }
        try #require(result == 0)
        return (fd, UInt16(bigEndian: address.sin_port))
    }

    /// The address of the first symbol named `name` in kallsyms text (module symbols included).
    static func address(of name: String, in kallsyms: [UInt8]) -> UInt64? {
        for line in String(decoding: kallsyms, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.count >= 3, fields[2] == name { return UInt64(fields[0], radix: 16) }
        }
        return nil
    }

    /// The vmlinux of the pinned package (decompressed by the xz tool) as the oracle for
    /// build-id and link addresses.
    static func vmlinuxBuildID() throws -> String {
        let output = try Fixtures.check("readelf", ["-n", try Fixtures.debianVmlinux().path])
        let line = try #require(output.split(separator: "\n").first { $0.contains("Build ID:") })
        return line.split(separator: ":").last!.trimmingCharacters(in: .whitespaces)
    }

    /// The virtual address of vmlinux's first PT_LOAD segment: where `_text` sits without KASLR.
    static func vmlinuxTextAddress() throws -> UInt64 {
        let output = try Fixtures.check("readelf", ["-lW", try Fixtures.debianVmlinux().path])
        let load = try #require(output.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("LOAD") })
        let fields = load.split(separator: " ")
        return try #require(UInt64(fields[2].dropFirst(2), radix: 16))
    }
}
