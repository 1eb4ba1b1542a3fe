import Foundation
import Testing
import TestSupport
import ELF
@testable import Lab

/// The helper module (kmod/suture.c) built against Debian's headers and exercised in the lab guest.
@Suite("Kernel module /dev/suture (Debian 6.1 headers, lab guest)", .serialized, .labVMExclusive)
struct KmodTests {
    static let release = Ingredients.kernelRelease

    static func module() throws -> String {
        try KernelModule(paths: LabPaths(cache: Fixtures.cacheFolder.path)).build(release: release)
    }

    @Test("suture kmod build --kernel-release 6.1.0-56-amd64 prints the .ko, whose vermagic is Debian's")
    func buildThroughCLI() throws {
        let output = try Fixtures.suture(["kmod", "build", "--kernel-release", Self.release],
                                         environment: ["SUTURE_CACHE": Fixtures.cacheFolder.path])
        #expect(output.status == 0, "\(output.stderr)")
        let ko = output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(ko.hasSuffix("/kmod/\(Self.release)/suture.ko"))
        let vermagic = try Fixtures.check("modinfo", ["-F", "vermagic", ko])
        #expect(vermagic.trimmingCharacters(in: .whitespacesAndNewlines) == "6.1.0-56-amd64 SMP preempt mod_unload modversions")
        // A release with no headers anywhere is refused with the apt command to run.
        let missing = try Fixtures.suture(["kmod", "build", "--kernel-release", "9.9.9-nonexistent"],
                                          environment: ["SUTURE_CACHE": Fixtures.cacheFolder.path])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("apt-get install linux-headers-9.9.9-nonexistent"))
    }

    @Test("kmod build: modinfo shows the Debian kernel's vermagic, GPL, no dependencies")
    func buildMatchesDebianKernel() throws {
        let ko = try Self.module()
        let vermagic = try Fixtures.check("modinfo", ["-F", "vermagic", ko])
        #expect(vermagic.trimmingCharacters(in: .whitespacesAndNewlines) == "6.1.0-56-amd64 SMP preempt mod_unload modversions")
        #expect(try Fixtures.check("modinfo", ["-F", "license", ko]) == "GPL\n")
        // Every symbol it calls is exported by this kernel (modpost checked the CRCs): list them.
        let undefined = try Fixtures.check("nm", ["-u", ko])
        for name in ["stop_machine", "vmap", "vunmap", "vm_unmap_aliases", "lookup_address", "sprint_symbol",
                     "__unwind_start", "unwind_next_frame", "misc_register"] {
            #expect(undefined.contains(" \(name)\n"), "suture.ko does not call \(name)")
        }
        for forbidden in ["text_poke", "kallsyms_lookup_name", "native_write_cr0"] {
            #expect(!undefined.contains(" \(forbidden)\n"), "suture.ko calls \(forbidden)")
        }
    }

    /// The bytes of nfs_flock in the Debian nfs.ko, from its symbol table: the oracle for reads.
    static func nfsFlockFileBytes(offset: Int, count: Int) throws -> [UInt8] {
        let elf = try ELFFile(path: try Fixtures.debianKernel().nfsKo.path)
        let symbol = try #require(try elf.symbols().first { $0.name == "nfs_flock" && $0.type == .function })
        let section = elf.sections[Int(symbol.sectionIndex)]
        let data = try elf.data(of: section)
        let start = Int(symbol.value) + offset
        return Array(data[start..<(start + count)])
    }

    @Test("in the guest: insmod, READ text only, CAS flips nfs_flock+0x2f (flock → ENOLCK) and back, refuses a wrong expectation, a busy range and data; timings")
    func ioctlsInGuest() throws {
        let ko = try Self.module()
        let folder = try Fixtures.temporaryFolder("suture-kmod")
        defer { try? FileManager.default.removeItem(at: folder) }
        let client = try KmodClient.build(in: folder)
        let options = LabOptions(nfs: true, extraFiles: [
            LabExtraFile(guestPath: "lib/suture/extra/suture.ko", hostPath: ko),
            LabExtraFile(guestPath: "sbin/kmodclient", hostPath: client.path, mode: 0o755),
        ])
        try LabHarness.withLab(options) { vm, _ in
            func run(_ command: String) throws -> String {
                let result = try vm.exec(command, timeout: 60)
                guard result.status == 0 else {
                    throw Fixtures.Failure("guest: `\(command)` exited \(result.status): \(result.output)")
                }
                return result.output
            }
            /// A command expected to fail with status 1; returns its output.
            func refused(_ command: String) throws -> String {
                let result = try vm.exec(command, timeout: 60)
                #expect(result.status == 1, "`\(command)` should be refused: \(result.output)")
                return result.output
            }

            _ = try run("insmod /lib/suture/extra/suture.ko")
            #expect(try run("ls -l /dev/suture").hasPrefix("crw-------"))
            #expect(try run("dmesg | grep 'suture: loaded'").contains("/dev/suture"))

            // The live address of nfs_flock and a data symbol, from the guest's kallsyms.
            let flockLine = try run("grep -E ' t nfs_flock\t\\[nfs\\]$' /proc/kallsyms")
            let flock = try #require(UInt64(flockLine.prefix(16), radix: 16))
            let target = flock + 0x2f
            let hex = { (a: UInt64) in String(a, radix: 16) }

            // READ: the live bytes at nfs_flock+0x2b equal the file's (testb $0x2,0x50(%rbx); je).
            let expected = try Self.nfsFlockFileBytes(offset: 0x2b, count: 6)
            #expect(expected == [0xf6, 0x43, 0x50, 0x02, 0x74, 0x39])
            let live = try run("kmodclient read \(hex(flock + 0x2b)) 6")
            #expect(live == expected.map { String(format: "%02x", $0) }.joined(separator: " ") + "\n")

            // READ outside text: init_task (data), the nfs module's data, a user address. Refused by the module.
            let initTask = try #require(UInt64(try run("grep -E ' [dD] init_task$' /proc/kallsyms").prefix(16), radix: 16))
            #expect(try refused("kmodclient read \(hex(initTask)) 8").contains("errno=\(EFAULT)"))
            let nfsData = try #require(UInt64(try run("grep -E ' [dD] .*\t\\[nfs\\]$' /proc/kallsyms | head -1").prefix(16), radix: 16))
            #expect(try refused("kmodclient read \(hex(nfsData)) 8").contains("is not text"))
            #expect(try refused("kmodclient read 400000 8").contains("outside the kernel image"))
            #expect(try refused("kmodclient cas \(hex(initTask)) 00 00").contains("errno=\(EFAULT)"))

            // CAS: flip the article's byte, flock on NFS fails with ENOLCK, tmpfs still locks.
            #expect(try run("flocktest /mnt/nfs/f") == "flock: OK\n")
            #expect(try run("kmodclient cas \(hex(target)) 74 75").hasPrefix("ok "))
            #expect(try refused("flocktest /mnt/nfs/f") == "flock: No locks available (errno 37)\n")
            #expect(try run("flocktest /mnt/local/f") == "flock: OK\n")
            // A wrong expectation is refused by the module with what it found; nothing changes.
            let wrong = try refused("kmodclient cas \(hex(target)) 74 75")
            #expect(wrong.contains("errno=\(EILSEQ) found=75"))
            #expect(wrong.contains("expected 74, found 75"))
            #expect(try run("kmodclient read \(hex(target)) 1") == "75\n")
            // Restore.
            #expect(try run("kmodclient cas \(hex(target)) 75 74").hasPrefix("ok "))
            #expect(try run("flocktest /mnt/nfs/f") == "flock: OK\n")
            // Every write is in the kernel log.
            let log = try run("dmesg | grep 'suture: pid'")
            #expect(log.contains("nfs_flock+0x2f/") && log.contains("74 -> 75") && log.contains("75 -> 74"))

            // The stack check: a sleeping task's return address (from /proc/PID/stack) is busy.
            // The write puts back the byte already there, so nothing changes even if it went through.
            let pid = try run("sleep 1000 >/dev/null 2>&1 & echo $!").trimmingCharacters(in: .whitespacesAndNewlines)
            usleep(300_000)
            // "[<0>] hrtimer_nanosleep+0x8f/0x120": a frame only a sleeping task has.
            let stack = try run("cat /proc/\(pid)/stack")
            let frame = try #require(stack.split(separator: "\n").first { $0.contains("nanosleep+") }, "stack of sleep: \(stack)")
            let symbolOffset = try #require(frame.split(separator: " ").last?.split(separator: "/").first)
            let parts = symbolOffset.split(separator: "+")
            let base = try #require(UInt64(try run("grep -E ' [tT] \(parts[0])$' /proc/kallsyms").prefix(16), radix: 16))
            let returnAddress = base + (try #require(UInt64(parts[1].dropFirst(2), radix: 16)))
            let byte = try run("kmodclient read \(hex(returnAddress)) 1").trimmingCharacters(in: .whitespacesAndNewlines)
            let busy = try refused("kmodclient cas \(hex(returnAddress)) \(byte) \(byte)")
            #expect(busy.contains("errno=\(EBUSY)") && busy.contains("busy_pid=\(pid)") && busy.contains("sleep"))
            _ = try run("kill \(pid); wait \(pid) 2>/dev/null; true")
            usleep(200_000)
            #expect(try run("kmodclient cas \(hex(returnAddress)) \(byte) \(byte)").hasPrefix("ok "))

            // Timings: 20 writes (10 flips and 10 restores), stop_machine time as the module measured it.
            var stops: [Double] = [], stopped: [Double] = [], walks: [Double] = [], tasks: [Int] = [], vouched: [Int] = []
            for i in 0..<20 {
                let (from, to) = i % 2 == 0 ? ("74", "75") : ("75", "74")
                let line = try run("kmodclient cas \(hex(target)) \(from) \(to)")
                var fields: [String: String] = [:]
                for word in line.split(separator: " ") {
                    let kv = word.split(separator: "=", maxSplits: 1)
                    if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
                }
                stops.append(Double(fields["stop_ns"] ?? "") ?? .nan)
                stopped.append(Double(fields["stopped_ns"] ?? "") ?? .nan)
                walks.append(Double(fields["walk_ns"] ?? "") ?? .nan)
                tasks.append(Int(fields["tasks"] ?? "") ?? -1)
                vouched.append(Int(fields["vouched"] ?? "") ?? -1)
            }
            #expect(try run("kmodclient read \(hex(target)) 1") == "74\n")
            #expect(try run("flocktest /mnt/nfs/f") == "flock: OK\n")
            func summary(_ values: [Double]) -> String {
                let sorted = values.sorted()
                return String(format: "%.0f / %.0f / %.0f µs", sorted.first! / 1000, sorted[sorted.count / 2] / 1000,
                              sorted.last! / 1000)
            }
            // Every task is accounted for: unwound under stop_machine, or vouched for by the pre-walk.
            #expect(!stops.contains { $0.isNaN } && zip(tasks, vouched).allSatisfy { $0 >= 1 && $1 >= 0 && $0 + $1 > 20 })
            print("kmod timings over 20 one-byte writes (min / median / max): stop_machine \(summary(stops)); "
                  + "stopped \(summary(stopped)); stack walk \(summary(walks)); tasks walked under stop_machine \(tasks.min()!)...\(tasks.max()!), vouched for by the pre-walk \(vouched.min()!)...\(vouched.max()!)")

            // No oops, BUG or usercopy complaint anywhere in this boot.
            let dmesg = try run("dmesg")
            for bad in ["Oops", "BUG", "usercopy: Kernel memory", "Call Trace"] {
                let lines = dmesg.split(separator: "\n").filter { $0.contains(bad) }
                #expect(lines.isEmpty, "kernel log mentions \(bad): \(lines.joined(separator: " | "))")
            }
            _ = try run("rmmod suture")
            #expect(try run("ls /dev/suture 2>&1; true").contains("No such file"))
        }
    }

    @Test("suture inside the guest: kmod status/load, flip -t local 'nfs_flock [nfs]+0x2f' → ENOLCK, a wrong --expect refused, revert --all restores")
    func sutureInGuest() throws {
        // What `suture lab up --inside` carries: the `make inside` build of this checkout (the Swift
        // runtime linked in statically), the few libraries it loads, and the module.
        let guest = try GuestSuture(binary: GuestSuture.defaultBinary(sourceRoot: Fixtures.repoRoot.path))
        #expect(!guest.libraries.contains { $0.guestPath.contains("libswift") || $0.guestPath.contains("Foundation") })
        let options = LabOptions(nfs: true, bootTimeout: 240, extraFiles: guest.files(module: try Self.module()))
        try LabHarness.withLab(options) { vm, _ in
            func exec(_ command: String) throws -> CommandResult { try vm.exec(command, timeout: 180) }
            let env = "SUTURE_STATE_DIR=/var/lib/suture"
            let status = try exec("\(env) suture kmod status 2>&1")
            #expect(status.status == 0 && status.output.contains("loaded: no") && status.output.contains("can load: yes"), "\(status.output)")
            let load = try exec("suture kmod load --module /\(GuestSuture.moduleGuestPath) 2>&1")
            #expect(load.status == 0 && load.output.contains("/dev/suture"), "\(load.output)")
            #expect(try exec("suture kmod status 2>&1").output.contains("loaded: yes"))

            #expect(try exec("flocktest /mnt/nfs/f").output == "flock: OK\n")
            let flip = try exec("\(env) suture flip -t local 'nfs_flock [nfs]+0x2f' 2>&1")
            #expect(flip.status == 0, "\(flip.output)")
            #expect(try exec("flocktest /mnt/nfs/f").output == "flock: No locks available (errno 37)\n")
            // The kernel log has the module's own record of the write.
            #expect(try exec("dmesg | grep 'suture: pid'").output.contains("nfs_flock+0x2f/"))

            let revert = try exec("\(env) suture revert -t local --all 2>&1")
            #expect(revert.status == 0, "\(revert.output)")
            #expect(try exec("flocktest /mnt/nfs/f").output == "flock: OK\n")
            // A wrong expectation (the byte is 74 again) is refused, naming what is there. Suture's
            // preflight refuses it before the module would; the module's own refusal (EILSEQ) is
            // tested below the CLI in ioctlsInGuest.
            let wrong = try exec("\(env) suture poke -t local 'nfs_flock [nfs]+0x2f' --expect 75 --write 76 2>&1")
            #expect(wrong.status != 0 && wrong.output.contains("74"), "\(wrong.output)")
            #expect(try exec("flocktest /mnt/nfs/f").output == "flock: OK\n")
            // The module swaps up to 16 bytes at once: a whole instruction rewritten at an odd
            // address (je rel32 → jmp rel32; nop), which /dev/kmem's single aligned store cannot do.
            #expect(try exec("hostname before-swap && hostname").output == "before-swap\n")
            let swap = try exec("\(env) suture poke -t local '__x64_sys_sethostname+0x5d' --expect '0f 84 9f 01 00 00' --write 'e9 a0 01 00 00 90' 2>&1")
            #expect(swap.status == 0, "\(swap.output)")
            #expect(swap.output.contains("6-byte compare-and-swap") && swap.output.contains("inside one instruction"), "\(swap.output)")
            #expect(swap.output.contains("0f 84 9f 01 00 00 → e9 a0 01 00 00 90"), "\(swap.output)")
            let denied = try exec("hostname after-swap 2>&1")
            #expect(denied.status != 0 && denied.output.contains("Operation not permitted"), "\(denied.output)")
            #expect(try exec("\(env) suture revert -t local --all 2>&1").status == 0)
            #expect(try exec("hostname after-revert && hostname").output == "after-revert\n")

            let read = try exec("\(env) suture read -t local 'nfs_flock [nfs]+0x2f' 1 2>&1")
            #expect(read.output.contains("74"), "\(read.output)")
            // A read outside text (init_task is data) is refused by the module.
            let data = try exec("\(env) suture read -t local init_task 8 2>&1")
            #expect(data.status != 0 && data.output.contains("not text"), "\(data.output)")
        }
    }

    /// Runs `command` in the guest with the journal folder the guest's suture uses.
    static func exec(_ vm: LabVM, _ command: String) throws -> CommandResult {
        try vm.exec("SUTURE_STATE_DIR=/var/lib/suture " + command, timeout: 180)
    }

    @Test("booted with lockdown=integrity module.sig_enforce=1: kmod status names both and offers --sign-key; load refuses the unsigned module before insmod, the kernel rejects the untrusted signed one; modules_disabled")
    func obstaclesInGuest() throws {
        let unsigned = try Self.module()
        let signed = try KmodSigningTests.signedModule().ko
        let signedGuestPath = "lib/suture/extra/suture-signed.ko"
        let files = try GuestSuture(binary: GuestSuture.defaultBinary(sourceRoot: Fixtures.repoRoot.path)).files(module: unsigned)
            + [LabExtraFile(guestPath: signedGuestPath, hostPath: signed)]
        let options = LabOptions(bootTimeout: 240, extraFiles: files,
                                 kernelArguments: ["lockdown=integrity", "module.sig_enforce=1"])
        try LabHarness.withLab(options) { vm, _ in
            func exec(_ command: String) throws -> CommandResult { try Self.exec(vm, command + " 2>&1") }
            // securityfs is where a distribution mounts it; the kernel's own files are the oracle.
            #expect(try exec("mount -t securityfs securityfs /sys/kernel/security").status == 0)
            #expect(try exec("cat /sys/kernel/security/lockdown").output == "none [integrity] confidentiality\n")
            #expect(try exec("cat /sys/module/module/parameters/sig_enforce").output == "Y\n")

            let unsignedPath = "/" + GuestSuture.moduleGuestPath
            let status = try exec("suture kmod status --module \(unsignedPath)")
            #expect(status.status == 0, "\(status.output)")
            for line in ["loaded: no", "module support: yes", "lockdown: integrity (/sys/kernel/security/lockdown)",
                         "module signatures enforced: yes (module.sig_enforce=Y)", "module loading disabled: no",
                         "running as root: yes", "module file: \(unsignedPath) (unsigned)", "can load: no",
                         "  - the kernel is locked down (integrity, /sys/kernel/security/lockdown)",
                         "  - module signatures are enforced (/sys/module/module/parameters/sig_enforce is Y)",
                         "suture kmod build --sign-key KEY --sign-cert CERT"] {
                #expect(status.output.contains(line + (line.hasPrefix("  -") || line.hasPrefix("suture") ? "" : "\n")),
                        "kmod status lacks \(line):\n\(status.output)")
            }
            // suture refuses the unsigned module itself; the kernel agrees when asked directly.
            let load = try exec("suture kmod load --module \(unsignedPath)")
            #expect(load.status == 1 && load.output.contains("cannot load \(unsignedPath) (unsigned):\n  - the kernel is locked down"),
                    "\(load.output)")
            #expect(!load.output.contains("insmod"), "\(load.output)")
            let kernel = try exec("insmod \(unsignedPath)")
            #expect(kernel.status != 0 && kernel.output.contains("Key was rejected by service"), "\(kernel.output)")
            #expect(try exec("ls /sys/module/suture").status != 0)

            // The signed module passes suture's checks; the kernel does not trust the test key.
            let signedStatus = try exec("suture kmod status --module /\(signedGuestPath)")
            #expect(signedStatus.output.contains("module file: /\(signedGuestPath) (signed, "), "\(signedStatus.output)")
            #expect(signedStatus.output.contains("can load: yes (suture kmod load), if the kernel trusts the key that signed it"),
                    "\(signedStatus.output)")
            let rejected = try exec("suture kmod load --module /\(signedGuestPath)")
            #expect(rejected.status == 1 && rejected.output.contains(
                "the kernel rejected the signature of /\(signedGuestPath): the key that signed it is not one the kernel trusts"),
                    "\(rejected.output)")
            #expect(try exec("ls /sys/module/suture").status != 0)

            // -t local without the module refuses to write and says why the module cannot load.
            let revert = try exec("suture revert -t local --all")
            #expect(revert.status == 1 && revert.output.contains("writes to this kernel go through it; nothing was changed; `suture kmod load` cannot load it now:\n")
                    && revert.output.contains("  - the kernel is locked down (integrity"), "\(revert.output)")

            // kernel.modules_disabled=1 (one way until reboot): no signature helps.
            #expect(try exec("echo 1 > /proc/sys/kernel/modules_disabled").status == 0)
            let disabled = try exec("suture kmod status --module /\(signedGuestPath)")
            #expect(disabled.output.contains("module loading disabled: yes (kernel.modules_disabled=1)\n")
                    && disabled.output.contains("can load: no\n  - module loading is disabled until reboot"), "\(disabled.output)")
        }
    }

    @Test("flip -t local with the signed module, kmod unload: the patch stays (ENOLCK), status reads it through /proc/kcore, revert refuses and changes nothing; kmod load, revert restores")
    func unloadKeepsPatchInGuest() throws {
        let signed = try KmodSigningTests.signedModule().ko
        let files = try GuestSuture(binary: GuestSuture.defaultBinary(sourceRoot: Fixtures.repoRoot.path)).files(module: signed)
        let options = LabOptions(nfs: true, bootTimeout: 240, extraFiles: files)
        try LabHarness.withLab(options) { vm, _ in
            func exec(_ command: String) throws -> CommandResult { try Self.exec(vm, command + " 2>&1") }
            let module = "/" + GuestSuture.moduleGuestPath
            let status = try exec("suture kmod status --module \(module)")
            #expect(status.output.contains("module file: \(module) (signed, ") && status.output.contains("can load: yes"), "\(status.output)")
            let load = try exec("suture kmod load --module \(module)")
            #expect(load.status == 0 && load.output.contains("/dev/suture"), "\(load.output)")

            #expect(try exec("flocktest /mnt/nfs/f").output == "flock: OK\n")
            let flip = try exec("suture flip -t local 'nfs_flock [nfs]+0x2f'")
            #expect(flip.status == 0, "\(flip.output)")
            let id = try #require(flip.output.split(separator: "\n").first { $0.hasPrefix("applied ") }?
                .split(separator: " ").dropFirst().first.map(String.init), "\(flip.output)")
            #expect(try exec("flocktest /mnt/nfs/f").output == "flock: No locks available (errno 37)\n")

            let unload = try exec("suture kmod unload")
            #expect(unload.status == 0 && unload.output.contains("1 applied patch stays in place: \(id)")
                    && unload.output.contains("reverting needs `suture kmod load`"), "\(unload.output)")
            #expect(try exec("ls /sys/module/suture").status != 0)
            #expect(try exec("ls /dev/suture").status != 0)
            // The patch is kernel text now, not the module's: still in force.
            #expect(try exec("flocktest /mnt/nfs/f").output == "flock: No locks available (errno 37)\n")

            // status reads the live bytes through /proc/kcore and says so.
            let applied = try exec("suture status -t local")
            #expect(applied.status == 0 && applied.output.contains("\(id)  applied  nfs_flock [nfs]+0x2f = 75 39")
                    && applied.output.contains("reading through /proc/kcore"), "\(applied.output)")

            // revert refuses before touching anything: bytes, journal and lock file stay as they are.
            let journalBefore = try exec("cat /var/lib/suture/journal.jsonl").output
            let refused = try exec("suture revert -t local --all")
            #expect(refused.status == 1 && refused.output.contains("the helper module is not loaded (no /dev/suture)")
                    && refused.output.contains("nothing was changed; run `suture kmod load` first"), "\(refused.output)")
            #expect(try exec("flocktest /mnt/nfs/f").output == "flock: No locks available (errno 37)\n")
            #expect(try exec("cat /var/lib/suture/journal.jsonl").output == journalBefore)
            #expect(try exec("suture status -t local").output.contains("\(id)  applied"))

            // Load it again: revert goes through the module and the lock works again.
            #expect(try exec("suture kmod load --module \(module)").status == 0)
            let revert = try exec("suture revert -t local --all")
            #expect(revert.status == 0 && revert.output.contains("reverted \(id)"), "\(revert.output)")
            #expect(try exec("flocktest /mnt/nfs/f").output == "flock: OK\n")
            let after = try exec("suture status -t local")
            #expect(after.output.contains("\(id)  reverted") && !after.output.contains("/proc/kcore"), "\(after.output)")
        }
    }
}
