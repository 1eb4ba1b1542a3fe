import Patching

/// The lab's tools (dpkg-deb, gcc, gzip, ldd, insmod) throw `LabError`: `toolMissing` and `io` are
/// its own cases.
extension LabError: HostToolFailure {
    /// Their output is short: the message carries all of it.
    package static func toolFailed(command: String, log: String?, result: HostTool.Result) -> LabError {
        .commandFailed(command: command, status: result.status, output: result.output)
    }
}
