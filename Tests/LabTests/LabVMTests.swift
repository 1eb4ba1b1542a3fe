import Foundation
import Synchronization
import Testing
import TestSupport
@testable import Lab

/// The lab against a real QEMU and the real Debian kernel. Serialized: two VMs on two cores
/// would slow each other past the boot timeouts. Each boot is reused for several checks.
@Suite("Lab VM (QEMU, Debian 6.1 kernel)", .serialized, .labVMExclusive)
struct LabVMTests {
    @Test("status, exec and kallsyms when no VM runs")
    func statusWhenDown() throws {
        let vm = LabVM(paths: try LabHarness.paths())
        defer { try? FileManager.default.removeItem(atPath: vm.paths.runFolder) }
        #expect(try vm.status() == .down(stale: nil))
        #expect(try vm.down() == false)
        do {
            _ = try vm.exec("true")
            Issue.record("exec succeeded without a VM")
        } catch {
            guard case .notUp = error else { throw error }
            #expect("\(error)".contains("suture lab up"))
        }
        #expect(throws: LabError.self) { try vm.kallsyms() }
    }

    @Test("boot with nokaslr: uname, exit status, console framing, kallsyms at link addresses, build-id")
    func bootWithoutKASLR() throws {
        let textAddress = try LabHarness.vmlinuxTextAddress()
        let buildID = try LabHarness.vmlinuxBuildID()
        // The first gdbstub port handed out is taken: QEMU fails to bind it and up tries another.
        let taken = try LabHarness.occupiedPort()
        defer { close(taken.fd) }
        var ports: [UInt16] = []
        let pickPort = { () throws(LabError) -> UInt16 in
            let port = ports.isEmpty ? taken.port : try SocketConnection.freeLoopbackPort()
            ports.append(port)
            return port
        }
        try LabHarness.withLab(LabOptions(kaslr: false), pickPort: pickPort) { vm, state in
            #expect(ports.count == 2 && ports[0] == taken.port)
            #expect(state.gdbPort == ports.last && state.gdbPort != taken.port)
            #expect(!state.kaslr)
            #expect(try vm.status() == .up(state))
            #expect(try vm.exec("uname -r") == CommandResult(output: "6.1.0-56-amd64\n", status: 0))
            #expect(try vm.exec("false").status == 1)
            // `exit` ends the command's subshell, not the guest's PID 1 shell.
            #expect(try vm.exec("exit 7").status == 7)
            #expect(try vm.exec("echo still here").output == "still here\n")
            #expect(try vm.exec("cat /proc/cmdline").output.contains("nokaslr"))

            // Longer than the 80-column console line; stdout and stderr both come back.
            let long = String(repeating: "0123456789", count: 30)
            #expect(try vm.exec("echo \(long); echo to-stderr >&2").output == long + "\nto-stderr\n")
            #expect(try vm.exec("printf 'a\\nb\\n'; printf 'no newline'").output == "a\nb\nno newline")
            // With the tty echoing, busybox's line editor echoes the command, wraps it at 80 columns
            // ("\r\r\n") and asks for the cursor position (ESC[6n): the markers still isolate the output.
            #expect(try vm.exec("stty -F /dev/ttyS0 echo").status == 0)
            #expect(try vm.exec("echo \(long); echo to-stderr >&2").output == long + "\nto-stderr\n")
            #expect(try vm.exec("(exit 5)").status == 5)
            #expect(try vm.exec("stty -F /dev/ttyS0 -echo").status == 0)
            // stdin is /dev/null: a command that reads input ends instead of eating the end marker.
            #expect(try vm.exec("cat").output == "")

            // A command that overruns its timeout is interrupted and the shell serves the next one.
            do {
                _ = try vm.exec("sleep 30", timeout: 1.5)
                Issue.record("sleep 30 finished within 1.5 s")
            } catch {
                guard case .commandTimeout? = error as? LabError else { throw error }
            }
            #expect(try vm.exec("echo alive", timeout: 10).output == "alive\n")

            // Two clients at once: the console lock serializes them, each gets its own output.
            let outputs = try concurrentExecs(vm, ["echo first", "echo second"])
            #expect(outputs == ["first\n", "second\n"])

            let info = try vm.info()
            #expect(info.release == "6.1.0-56-amd64")
            #expect(info.buildIDHex == buildID)
            #expect(info.bootID == state.bootID)

            let kallsyms = try vm.kallsyms()
            #expect(!kallsyms.cached)
            #expect(kallsyms.lineCount > 90_000)
            #expect(LabHarness.address(of: "_text", in: kallsyms.text) == textAddress)
            #expect(FileManager.default.contents(atPath: kallsyms.path) == Data(kallsyms.text))

            // Up twice from one run folder is refused, naming the running QEMU.
            #expect(throws: LabError.self) { try vm.up(LabOptions(kaslr: false)) }
        }
    }

    @Test("boot with KASLR and NFS: kallsyms over the bulk channel has nfs_flock [nfs], flock works on NFS")
    func bootWithKASLRAndNFS() throws {
        let linkAddress = try LabHarness.vmlinuxTextAddress()
        try LabHarness.withLab(LabOptions(nfs: true)) { vm, state in
            #expect(state.kaslr)
            #expect(state.nfsSeconds != nil)
            #expect(try vm.exec("uname -r").output == "6.1.0-56-amd64\n")
            #expect(try !vm.exec("cat /proc/cmdline").output.contains("nokaslr"))
            #expect(try vm.exec("false").status == 1)

            let mounts = try vm.exec("grep ' /mnt/nfs ' /proc/mounts").output
            #expect(mounts.hasPrefix("127.0.0.1:/export /mnt/nfs nfs "))
            #expect(mounts.contains("vers=3"))
            #expect(try vm.exec("flocktest /mnt/nfs/x") == CommandResult(output: "flock: OK\n", status: 0))
            #expect(try vm.exec("flocktest /mnt/local/x") == CommandResult(output: "flock: OK\n", status: 0))
            #expect(try vm.exec("flocktest /nonexistent/x").status == 2)

            let kallsyms = try vm.kallsyms()
            #expect(kallsyms.lineCount > 100_000)
            let text = String(decoding: kallsyms.text, as: UTF8.self)
            let nfsFlock = text.split(separator: "\n").filter { $0.hasSuffix(" t nfs_flock\t[nfs]") || $0.hasSuffix(" T nfs_flock\t[nfs]") }
            #expect(nfsFlock.count == 1, "lines for nfs_flock: \(nfsFlock)")
            // The kernel moved: text is somewhere 2 MB-aligned above its link address.
            let textAddress = try #require(LabHarness.address(of: "_text", in: kallsyms.text))
            #expect(textAddress >= linkAddress && (textAddress - linkAddress) % 0x20_0000 == 0)
            // Same boot, same modules: served from the cache; the guest agrees with a grep of its own.
            #expect(try vm.kallsyms().cached)
            let guestLine = try vm.exec("grep -E ' nfs_flock\t' /proc/kallsyms").output
            #expect(guestLine == nfsFlock.joined(separator: "\n") + "\n")
            #expect(try vm.exec("wc -l < /proc/kallsyms").output.trimmingCharacters(in: .whitespacesAndNewlines)
                    == "\(kallsyms.lineCount)")
        }
    }

    @Test("a kernel path that does not exist: QEMU's message in the error, nothing left running")
    func bogusKernelPath() throws {
        let vm = LabVM(paths: try LabHarness.paths())
        defer { try? FileManager.default.removeItem(atPath: vm.paths.runFolder) }
        let image = LabImage(kernel: "/nonexistent/vmlinuz-bogus", initramfs: try Ingredients(paths: vm.paths).fetch().initramfs)
        do {
            try vm.up(LabOptions(bootTimeout: 60, image: image))
            _ = try? vm.down()
            Issue.record("booted a kernel that does not exist")
        } catch {
            guard case .qemuExited(_, let qemuOutput, _) = error else { throw error }
            #expect(qemuOutput.contains("/nonexistent/vmlinuz-bogus"))
        }
        #expect(LabHarness.qemuProcesses(in: vm.paths.runFolder).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: vm.paths.stateFile))
        #expect(try vm.status() == .down(stale: nil))
    }

    @Test("an initramfs the kernel cannot unpack: panic reported with the console tail, nothing left running")
    func panicShowsConsoleTail() throws {
        let vm = LabVM(paths: try LabHarness.paths())
        defer { try? FileManager.default.removeItem(atPath: vm.paths.runFolder) }
        let garbage = vm.paths.runFolder + "/garbage.cpio.gz"
        try Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }).write(to: URL(fileURLWithPath: garbage))
        let image = LabImage(kernel: Ingredients(paths: vm.paths).kernelImage, initramfs: garbage)
        do {
            try vm.up(LabOptions(bootTimeout: 90, image: image))
            _ = try? vm.down()
            Issue.record("booted without a usable initramfs")
        } catch {
            guard case .guestPanic(let tail) = error else { throw error }
            #expect(tail.contains("Kernel panic"))
            #expect("\(error)".contains("console (last lines)"))
        }
        #expect(LabHarness.qemuProcesses(in: vm.paths.runFolder).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: vm.paths.stateFile))
    }

    @Test("no QEMU program: the error names the package to install")
    func qemuMissing() throws {
        let vm = LabVM(paths: try LabHarness.paths())
        defer { try? FileManager.default.removeItem(atPath: vm.paths.runFolder) }
        do {
            try vm.up(LabOptions(qemu: "qemu-system-suture-missing"))
            _ = try? vm.down()
            Issue.record("started a QEMU that does not exist")
        } catch {
            guard case .toolMissing(let tool, _) = error else { throw error }
            #expect(tool == "qemu-system-suture-missing")
            #expect("\(error)".contains("apt-get install qemu-system-x86"))
        }
    }

    @Test("no shell in time: boot timeout with the console tail, nothing left running")
    func bootTimeout() throws {
        let vm = LabVM(paths: try LabHarness.paths())
        defer { try? FileManager.default.removeItem(atPath: vm.paths.runFolder) }
        do {
            try vm.up(LabOptions(bootTimeout: 1))
            _ = try? vm.down()
            Issue.record("a shell within 1 s under TCG")
        } catch {
            guard case .bootTimeout(let seconds, _) = error else { throw error }
            #expect(seconds == 1)
            #expect("\(error)".contains("console (last lines)"))
        }
        #expect(LabHarness.qemuProcesses(in: vm.paths.runFolder).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: vm.paths.stateFile))
    }

    /// Runs commands from separate threads at the same moment; returns their outputs in order.
    private func concurrentExecs(_ vm: LabVM, _ commands: [String]) throws -> [String] {
        let results = Mutex<[Int: Result<CommandResult, LabError>]>([:])
        DispatchQueue.concurrentPerform(iterations: commands.count) { index in
            let result: Result<CommandResult, LabError>
            do throws(LabError) {
                result = .success(try vm.exec(commands[index], timeout: 30))
            } catch {
                result = .failure(error)
            }
            results.withLock { $0[index] = result }
        }
        return try commands.indices.map { index in
            try results.withLock { $0[index]! }.get().output
        }
    }
}
