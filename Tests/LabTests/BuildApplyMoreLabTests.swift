import Foundation
import Testing
import TestSupport
@testable import Lab

/// `suture build` → `suture apply -t lab` for the two kinds of bundle the article's patch does not
/// make: a string literal reached through a reference (the engine writes it as data, found through
/// the field of the code that loads its address), and one patch touching two objects (a module's and
/// built-in code's). Oracles are the guest's own: sysfs text, flock() and sethostname() results, and
/// the live bytes read back. One boot serves both tests (each leaves the kernel unpatched); the
/// builds use the prepared Debian tree in the cache (`suture build --debian-kernel`).
@Suite("suture build of strings and of two objects, then apply in the lab", .serialized, .labVMExclusive,
       .sharedLab(LabOptions(nfs: true)))
struct BuildApplyMoreLabTests {
    /// Builds `Tests/Fixtures/<patch>` for the lab's kernel; returns the bundle's path, its JSON and
    /// what `suture build` printed.
    static func build(_ patch: String, into folder: URL) throws -> (path: String, json: [String: Any], output: String) {
        let bundlePath = folder.appendingPathComponent(patch + ".bundle.json").path
        let source = Fixtures.sourcesFolder.appendingPathComponent(patch).path
        let build = try Fixtures.suture(["build", "--debian-kernel", Ingredients.kernelRelease, source, "-o", bundlePath])
        try #require(build.status == 0, "suture build \(patch) failed:\n\(CLI.describe(build))")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: bundlePath))) as? [String: Any]
        return (bundlePath, try #require(json, "\(bundlePath) is not a JSON object"), build.stdout)
    }

    /// `suture status -t lab`'s line for `id` (nil when it lists no such patch).
    static func statusLine(_ id: String, _ environment: [String: String]) throws -> String? {
        let status = try CLI.run(["status", "-t", "lab"], environment)
        #expect(status.status == 0, "\(CLI.describe(status))")
        return status.stdout.split(separator: "\n").map(String.init).first { $0.hasPrefix(id + "  ") }
    }

    /// The live bytes at `expression` through the gdbstub (`suture read -t lab --json`).
    static func liveBytes(_ expression: String, _ count: Int, _ environment: [String: String]) throws -> String {
        let read = try CLI.run(["read", "-t", "lab", "--json", expression, String(count)], environment)
        try #require(read.status == 0, "\(CLI.describe(read))")
        let json = try JSONSerialization.jsonObject(with: Data(read.stdout.utf8)) as? [String: String]
        return try #require(json?["bytes"], "no bytes in \(read.stdout)")
    }

    @Test("virtio_modalias.patch: the modalias format string, found through modalias_show's reference, becomes VIRTIO:… in sysfs; revert restores virtio:…")
    func stringThroughReference() throws {
        let lab = try SharedLab.require()
        let folder = try Fixtures.temporaryFolder("suture-build-string")
        defer { try? FileManager.default.removeItem(at: folder) }
        let env = lab.environment(stateDirectory: folder.appendingPathComponent("state"))

        let (bundlePath, json, output) = try Self.build("virtio_modalias.patch", into: folder)
        #expect(output.contains("1 hunk in the string at *(modalias_show [virtio]+0xe)"), "\(output)")
        let id = try #require(json["id"] as? String)
        // One hunk, and it is the string: no symbol of its own, placed through the 32-bit absolute
        // field of modalias_show's `mov $str,%rsi` (virtio.ko is one object, so its strings are the
        // linked module's), whole string and NUL, same length.
        let hunks = try #require(json["hunks"] as? [[String: Any]])
        try #require(hunks.count == 1, "expected one string hunk, got \(hunks)")
        let hunk = hunks[0]
        #expect(hunk["symbol"] == nil)
        let reference = try #require(hunk["reference"] as? [String: Any], "no reference in \(hunk)")
        #expect(reference["symbol"] as? String == "modalias_show")
        #expect(reference["module"] as? String == "virtio")
        #expect(reference["encoding"] as? String == "abs32s")
        let hex = { (text: String) in (Array(text.utf8) + [0]).map { String(format: "%02x", $0) }.joined(separator: " ") }
        #expect(hunk["expected"] as? String == hex("virtio:d%08Xv%08X\n"))
        #expect(hunk["replacement"] as? String == hex("VIRTIO:d%08Xv%08X\n"))

        // The guest's virtio devices (the console port of the lab's bulk channel, at least), as sysfs
        // prints them through modalias_show. The lab loads virtio.ko on the channel's first use;
        // its own script does that here, so the text is there before anything is applied.
        let port = try lab.vm.exec("/suture/bulk-port")
        try #require(port.status == 0 && port.output.hasPrefix("/dev/vport"), "/suture/bulk-port: \(port)")
        let read = "cat /sys/bus/virtio/devices/*/modalias"
        let before = try lab.vm.exec(read)
        try #require(before.status == 0 && !before.output.isEmpty, "\(read): \(before)")
        let lines = before.output.split(separator: "\n").map(String.init)
        try #require(lines.allSatisfy { $0.hasPrefix("virtio:d") }, "unexpected modalias text: \(before.output)")

        let apply = try CLI.run(["apply", "-t", "lab", bundlePath], env)
        try #require(apply.status == 0, "suture apply failed:\n\(CLI.describe(apply))")
        for check in ["identity", "bytes", "busy"] {
            #expect(apply.stdout.contains("✓ \(check)"), "no passed \(check) check in:\n\(apply.stdout)")
        }
        // Written as data: no instruction boundaries to keep, and found through the live field.
        #expect(apply.stdout.contains("✓ boundaries *(modalias_show [virtio]+0xe): data: no instruction boundaries"),
                "\(apply.stdout)")
        // Where the engine found the string (the applied line: location, address, bytes), read back.
        let applied = try #require(apply.stdout.split(separator: "\n").first { $0.hasPrefix("  *(modalias_show [virtio]+0xe)  0x") },
                                   "no applied line in:\n\(apply.stdout)")
        let address = try #require(applied.split(separator: " ").first { $0.hasPrefix("0x") }.map(String.init))
        #expect(try Self.liveBytes(address, 19, env) == hex("VIRTIO:d%08Xv%08X\n"))
        #expect(try Self.statusLine(id, env)?.contains("  applied") == true)
        let patched = try lab.vm.exec(read)
        #expect(patched.output.split(separator: "\n").map(String.init) == lines.map { "VIRTIO" + $0.dropFirst("virtio".count) },
                "after apply: \(patched.output)")

        let revert = try CLI.run(["revert", "-t", "lab", id], env)
        #expect(revert.status == 0, "suture revert failed:\n\(CLI.describe(revert))")
        #expect(try lab.vm.exec(read).output == before.output)
        #expect(try Self.liveBytes(address, 19, env) == hex("virtio:d%08Xv%08X\n"))
        #expect(try Self.statusLine(id, env)?.contains("  reverted") == true)
    }

    @Test("nfs_flock_sethostname.patch: hunks from fs/nfs/file.o (module nfs) and kernel/sys.o (built in); flock on NFS and sethostname fail, revert restores both")
    func twoObjects() throws {
        let lab = try SharedLab.require()
        let folder = try Fixtures.temporaryFolder("suture-build-two")
        defer { try? FileManager.default.removeItem(at: folder) }
        let env = lab.environment(stateDirectory: folder.appendingPathComponent("state"))

        let (bundlePath, json, output) = try Self.build("nfs_flock_sethostname.patch", into: folder)
        for object in ["object fs/nfs/file.o (module nfs;", "object kernel/sys.o (built in;"] {
            #expect(output.contains(object), "no \(object) in:\n\(output)")
        }
        let id = try #require(json["id"] as? String)
        // Both objects contributed: nfs_flock's je of nfs.ko, and sethostname's je in both syscall
        // entry points of vmlinux (the 64-bit and the ia32 one inline the same body).
        let hunks = try #require(json["hunks"] as? [[String: Any]])
        let places = hunks.map { "\($0["symbol"] as? String ?? "?") [\($0["module"] as? String ?? "vmlinux")]+\($0["offset"] as? String ?? "?")" }
        #expect(Set(places) == ["nfs_flock [nfs]+0x2f", "__x64_sys_sethostname [vmlinux]+0x5d", "__ia32_sys_sethostname [vmlinux]+0x5d"],
                "\(hunks)")

        let ok = CommandResult(output: "flock: OK\n", status: 0)
        let enolck = CommandResult(output: "flock: \(String(cString: strerror(ENOLCK))) (errno \(ENOLCK))\n", status: 1)
        #expect(try lab.vm.exec("/sbin/flocktest /mnt/nfs/two-before") == ok)
        #expect(try lab.vm.exec("hostname suture-before && hostname") == CommandResult(output: "suture-before\n", status: 0))
        #expect(try Self.liveBytes("__ia32_sys_sethostname+0x5d", 6, env) == "0f 84 9f 01 00 00")

        let apply = try CLI.run(["apply", "-t", "lab", bundlePath], env)
        try #require(apply.status == 0, "suture apply failed:\n\(CLI.describe(apply))")
        // Both objects' functions (nfs_flock against nfs.ko, the syscalls against vmlinux) checked whole.
        for check in ["identity", "bytes", "function", "boundaries", "busy"] {
            #expect(apply.stdout.contains("✓ \(check)"), "no passed \(check) check in:\n\(apply.stdout)")
        }
        #expect(try Self.statusLine(id, env)?.contains("  applied") == true)
        // The module's hunk: flock on NFS refused, on tmpfs not.
        #expect(try lab.vm.exec("/sbin/flocktest /mnt/nfs/two-patched") == enolck)
        #expect(try lab.vm.exec("/sbin/flocktest /mnt/local/two-patched") == ok)
        // The built-in hunk: root (CAP_SYS_ADMIN) is now refused, and the name stays.
        let refused = try lab.vm.exec("hostname suture-patched; echo status=$?; hostname")
        #expect(refused.output.contains("Operation not permitted") && refused.output.hasSuffix("status=1\nsuture-before\n"),
                "\(refused)")
        // The ia32 entry point, which no guest program calls, read back.
        #expect(try Self.liveBytes("__ia32_sys_sethostname+0x5d", 6, env) == "0f 85 9f 01 00 00")

        let revert = try CLI.run(["revert", "-t", "lab", id], env)
        #expect(revert.status == 0, "suture revert failed:\n\(CLI.describe(revert))")
        #expect(try lab.vm.exec("/sbin/flocktest /mnt/nfs/two-reverted") == ok)
        #expect(try lab.vm.exec("hostname suture-reverted && hostname") == CommandResult(output: "suture-reverted\n", status: 0))
        #expect(try Self.liveBytes("__ia32_sys_sethostname+0x5d", 6, env) == "0f 84 9f 01 00 00")
        #expect(try Self.statusLine(id, env)?.contains("  reverted") == true)
    }

    @Test("nfs_flock_text.patch: nfs_flock's dprintk format, a string of fs/nfs/file.o judged with the shipped nfs.ko, prints \"NFS: FLOCK(\" in the kernel log; revert restores \"NFS: flock(\"")
    func stringOfAMultiObjectModule() throws {
        let lab = try SharedLab.require()
        let folder = try Fixtures.temporaryFolder("suture-build-nfs-text")
        defer { try? FileManager.default.removeItem(at: folder) }
        let env = lab.environment(stateDirectory: folder.appendingPathComponent("state"))

        let (bundlePath, json, output) = try Self.build("nfs_flock_text.patch", into: folder)
        let id = try #require(json["id"] as? String)
        let hunks = try #require(json["hunks"] as? [[String: Any]])
        try #require(hunks.count == 1, "expected one string hunk, got \(hunks)")
        let reference = try #require(hunks[0]["reference"] as? [String: Any], "no reference in \(hunks[0])")
        #expect(reference["module"] as? String == "nfs")
        let location = "*(\(reference["symbol"] as? String ?? "?") [nfs]+\(reference["field"] as? String ?? "?"))"
        #expect(output.contains("1 hunk in the string at \(location)"), "\(output)")
        let hex = { (text: String) in (Array(text.utf8) + [0]).map { String(format: "%02x", $0) }.joined(separator: " ") }
        let original = "NFS: flock(%pD2, t=%x, fl=%x)\n", patched = "NFS: FLOCK(%pD2, t=%x, fl=%x)\n"
        #expect(hunks[0]["expected"] as? String == hex(original) && hunks[0]["replacement"] as? String == hex(patched))

        // file.c's dprintk facility is NFSDBG_FILE (0x40): nfs_flock then logs its format, with the
        // file's last two path components (%pD2), which tell each call's line apart.
        defer { _ = try? lab.vm.exec("echo 0 > /proc/sys/sunrpc/nfs_debug") }
        try #require(try lab.vm.exec("echo 64 > /proc/sys/sunrpc/nfs_debug").status == 0)
        func logged(_ name: String) throws -> String {
            #expect(try lab.vm.exec("/sbin/flocktest /mnt/nfs/\(name)").status == 0)
            return try lab.vm.exec("dmesg | grep '/\(name),'").output
        }
        let before = try logged("text-before")
        #expect(before.contains("NFS: flock(") && !before.contains("NFS: FLOCK("), "\(before)")

        let apply = try CLI.run(["apply", "-t", "lab", bundlePath], env)
        try #require(apply.status == 0, "suture apply failed:\n\(CLI.describe(apply))")
        let applied = try #require(apply.stdout.split(separator: "\n").first { $0.hasPrefix("  \(location)  0x") },
                                   "no applied line in:\n\(apply.stdout)")
        let address = try #require(applied.split(separator: " ").first { $0.hasPrefix("0x") }.map(String.init))
        #expect(try Self.liveBytes(address, original.utf8.count + 1, env) == hex(patched))
        let after = try logged("text-patched")
        #expect(after.contains("NFS: FLOCK(") && !after.contains("NFS: flock("), "\(after)")

        let revert = try CLI.run(["revert", "-t", "lab", id], env)
        #expect(revert.status == 0, "suture revert failed:\n\(CLI.describe(revert))")
        #expect(try Self.liveBytes(address, original.utf8.count + 1, env) == hex(original))
        let reverted = try logged("text-reverted")
        #expect(reverted.contains("NFS: flock(") && !reverted.contains("NFS: FLOCK("), "\(reverted)")
        #expect(try Self.statusLine(id, env)?.contains("  reverted") == true)
    }
}
