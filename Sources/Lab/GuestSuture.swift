import Foundation
import Patching

/// What carries Suture into the lab guest (`suture lab up --inside`): the helper module built for
/// the lab's kernel, the `suture` binary, and every shared library ldd names for it, placed at the
/// same absolute paths in the guest (a toolchain build's RUNPATH points at the Swift runtime).
public enum GuestSuture {
    /// Where the module lands in the guest; `suture kmod load --module` takes this path.
    public static let moduleGuestPath = "lib/suture/extra/suture.ko"

    public static func files(binary: String, module: String) throws(LabError) -> [LabExtraFile] {
        var files = [LabExtraFile(guestPath: moduleGuestPath, hostPath: module),
                     LabExtraFile(guestPath: "sbin/suture", hostPath: binary, mode: 0o755)]
        let result = try HostTool.run("ldd", [binary], package: "libc-bin", throwing: LabError.self)
        guard result.status == 0 else {
            // A fully static build has nothing to add.
            if result.output.contains("not a dynamic executable") { return files }
            throw .commandFailed(command: "ldd \(binary)", status: result.status, output: result.output)
        }
        for line in result.stdout.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.contains("not") { throw .libraryMissing(binary: binary, library: String(fields[0])) }
            guard let path = fields.first(where: { $0.hasPrefix("/") }).map(String.init) else { continue }
            // The guest gets the library's contents under the name the loader asks for.
            let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            files.append(LabExtraFile(guestPath: String(path.dropFirst()), hostPath: resolved, mode: 0o755))
        }
        return files
    }

    /// This process' own executable.
    public static func currentBinary() -> String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
    }
}
