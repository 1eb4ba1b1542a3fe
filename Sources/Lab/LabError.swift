import Foundation

/// Everything that can go wrong while fetching, booting or driving the lab VM.
///
/// Each message names the file or target, what was expected and what was found, and where a
/// person can act, the command that fixes it.
public enum LabError: Error, CustomStringConvertible, Sendable {
    /// A host program the lab needs is not installed.
    case toolMissing(tool: String, package: String)
    /// `apt-get download` failed; `policy` is `apt-cache policy` for the package.
    case packageUnavailable(package: String, version: String?, output: String, policy: String)
    /// A host command failed (dpkg-deb, gcc, gzip, ldd, ...).
    case commandFailed(command: String, status: Int32, output: String)
    /// The extracted kernel package does not look like the pinned one.
    case kernelTreeInvalid(path: String, expected: String, found: String)
    /// A file the initramfs needs is missing (a module, a binary from the NFS packages, ...).
    case ingredientMissing(path: String, purpose: String)
    /// `ldd` could not resolve a shared library of a guest binary.
    case libraryMissing(binary: String, library: String)
    /// The `suture` binary to carry into the guest (`lab up --inside`) does not exist.
    case guestBinaryMissing(path: String)
    /// The `suture` binary to carry into the guest is not one the guest can run as shipped.
    case guestBinaryUnsuitable(path: String, expected: String, found: String)
    /// A kernel module depends on one the lab does not ship.
    case moduleDependencyMissing(module: String, dependency: String)
    /// A file operation failed.
    case io(path: String, operation: String, errno: Int32)
    /// A unix socket path longer than `sun_path` allows.
    case socketPathTooLong(path: String, limit: Int)
    /// Signing the helper module failed (a key, a certificate or sign-file).
    case moduleSigning(ModuleSigningError)

    /// No free loopback port could be bound for the gdbstub after several tries.
    case portInUse(port: UInt16, attempts: Int)
    /// QEMU exited before the guest shell was ready.
    case qemuExited(status: String, qemuOutput: String, consoleTail: String)
    /// The guest kernel panicked.
    case guestPanic(consoleTail: String)
    /// The guest printed no ready marker in time.
    case bootTimeout(seconds: Double, consoleTail: String)
    /// `--nfs` setup inside the guest failed.
    case nfsSetupFailed(status: Int32, output: String)
    /// A lab VM is already running from this run folder.
    case alreadyUp(pid: Int32, gdbPort: UInt16, runFolder: String)
    /// No lab VM runs from this run folder.
    case notUp(runFolder: String)
    /// QEMU survived SIGKILL (should not happen; reported rather than ignored).
    case stopFailed(pid: Int32)
    /// The state file exists but cannot be decoded.
    case stateUnreadable(path: String, reason: String)

    /// The console socket could not be connected or closed while reading.
    case consoleClosed(socket: String, waitingFor: String, tail: String)
    /// A console command did not finish in time (it was interrupted with ^C).
    case commandTimeout(command: String, seconds: Double, tail: String)
    /// A command longer than the guest tty accepts in one line.
    case commandTooLong(length: Int, limit: Int)
    /// The console answered something the protocol does not expect.
    case consoleProtocol(socket: String, expected: String, found: String)
    /// The bulk channel did not deliver its terminator in time.
    case bulkTimeout(file: String, terminator: String, seconds: Double, received: Int)
    /// QMP answered something unexpected.
    case qmpProtocol(socket: String, expected: String, found: String)

    public var description: String {
        switch self {
        case let .toolMissing(tool, package):
            return "\(tool) not found in PATH: apt-get install \(package)"
        case let .packageUnavailable(package, version, output, policy):
            let wanted = version.map { "\(package)=\($0)" } ?? package
            return "apt-get download \(wanted) failed; the archive may no longer carry it.\n"
                + "apt-get said:\n\(Self.indent(output))\napt-cache policy \(package):\n\(Self.indent(policy))"
        case let .commandFailed(command, status, output):
            return "\(command) exited with status \(status):\n\(Self.indent(output))"
        case let .kernelTreeInvalid(path, expected, found):
            return "kernel package tree \(path): expected \(expected), found \(found) (delete it and run `suture lab fetch`)"
        case let .ingredientMissing(path, purpose):
            return "\(path) is missing (needed for \(purpose)); run `suture lab fetch`"
        case let .libraryMissing(binary, library):
            return "\(binary): shared library \(library) not found by ldd in the NFS packages nor on the host"
        case let .guestBinaryMissing(path):
            // The default path names its checkout: say where to run make.
            let checkout = path.hasSuffix("/" + GuestSuture.buildPath) ? String(path.dropLast(GuestSuture.buildPath.count + 1)) : nil
            return "\(path) does not exist (the suture to carry into the guest): "
                + (checkout.map { "run `\(GuestSuture.buildCommand)` in \($0)" } ?? "build one with `\(GuestSuture.buildCommand)`")
                + " (a release build with the Swift runtime linked in statically), or name another with --binary"
        case let .guestBinaryUnsuitable(path, expected, found):
            return "\(path) cannot go into the guest: expected \(expected), found \(found); "
                + "build one with `\(GuestSuture.buildCommand)`"
        case let .moduleDependencyMissing(module, dependency):
            return "kernel module \(module) depends on \(dependency), which the lab's module list does not include"
        case let .io(path, operation, errno):
            return "\(path): \(operation) failed: \(Self.errnoText(errno)) (errno \(errno))"
        case let .socketPathTooLong(path, limit):
            return "unix socket path \(path) is \(path.utf8.count) bytes; the limit is \(limit): use a shorter run folder"
        case let .moduleSigning(error):
            return error.description
        case let .portInUse(port, attempts):
            return "gdbstub port 127.0.0.1:\(port) was taken by another program (\(attempts) ports tried)"
        case let .qemuExited(status, qemuOutput, consoleTail):
            return "QEMU exited (\(status)) before the guest shell was ready.\nQEMU said:\n\(Self.indent(qemuOutput))"
                + "\nconsole (last lines):\n\(Self.indent(consoleTail))"
        case let .guestPanic(consoleTail):
            return "the guest kernel panicked; console (last lines):\n\(Self.indent(consoleTail))"
        case let .bootTimeout(seconds, consoleTail):
            return "no guest shell after \(Self.seconds(seconds)); console (last lines):\n\(Self.indent(consoleTail))"
        case let .nfsSetupFailed(status, output):
            return "NFS setup in the guest failed with status \(status):\n\(Self.indent(output))"
        case let .alreadyUp(pid, port, runFolder):
            return "the lab is already up in \(runFolder) (QEMU pid \(pid), gdbstub 127.0.0.1:\(port)): run `suture lab down` first"
        case let .notUp(runFolder):
            return "the lab is not up (no running VM in \(runFolder)): run `suture lab up`"
        case let .stopFailed(pid):
            return "QEMU pid \(pid) is still running after SIGKILL"
        case let .stateUnreadable(path, reason):
            return "lab state file \(path) cannot be read: \(reason)"
        case let .consoleClosed(socket, waitingFor, tail):
            return "serial console \(socket) closed while waiting for \(waitingFor); last output:\n\(Self.indent(tail))"
        case let .commandTimeout(command, seconds, tail):
            return "guest command `\(command)` did not finish within \(Self.seconds(seconds)) (interrupted with ^C); "
                + "last output:\n\(Self.indent(tail))"
        case let .commandTooLong(length, limit):
            return "guest command is \(length) bytes; the console accepts at most \(limit) per command"
        case let .consoleProtocol(socket, expected, found):
            return "serial console \(socket): expected \(expected), found \(found)"
        case let .bulkTimeout(file, terminator, seconds, received):
            return "bulk channel \(file): no terminator \(terminator) within \(Self.seconds(seconds)) (\(received) bytes received)"
        case let .qmpProtocol(socket, expected, found):
            return "QMP \(socket): expected \(expected), found \(found)"
        }
    }

    static func indent(_ text: String) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return lines.map { "  " + $0 }.joined(separator: "\n")
    }

    static func seconds(_ value: Double) -> String {
        String(format: "%.1f s", value)
    }

    static func errnoText(_ code: Int32) -> String {
        String(cString: strerror(code))
    }
}
