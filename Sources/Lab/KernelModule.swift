import Foundation
import Patching

/// Builds Suture's helper kernel module (`kmod/suture.c`) against the headers of one kernel release.
///
/// Headers come from, in order: the folder given; the host's `/lib/modules/<release>/build` or
/// `/usr/src/linux-headers-<release>`; for the lab's pinned kernel, Debian's header packages
/// downloaded and extracted into the cache (`apt-get download` + `dpkg-deb -x`, never installed, so
/// the host is untouched). The module sources are copied into the cache and built there, so the
/// source tree stays clean and a read-only checkout works.
public struct KernelModule: Sendable {
    public static let name = "suture"
    /// Debian's header packages for the lab's kernel: the arch-specific part includes the common
    /// part's Makefile, whose scripts live in linux-kbuild.
    static let headerPackages = [
        "linux-headers-\(Ingredients.kernelRelease)=\(Ingredients.kernelVersion)",
        "linux-headers-6.1.0-56-common=\(Ingredients.kernelVersion)",
        "linux-kbuild-6.1=\(Ingredients.kernelVersion)",
    ]

    public let paths: LabPaths
    /// The repository holding `kmod/` and `Sources/CShim/include/suture_kmod.h`.
    public let sourceRoot: String

    public init(paths: LabPaths = LabPaths(), sourceRoot: String? = nil) {
        self.paths = paths
        self.sourceRoot = sourceRoot
            ?? ProcessInfo.processInfo.environment["SUTURE_SOURCE_ROOT"].flatMap { $0.isEmpty ? nil : $0 }
            ?? Self.compiledSourceRoot()
    }

    /// The checkout this file was compiled from (three levels above Sources/Lab/KernelModule.swift).
    static func compiledSourceRoot(file: String = #filePath) -> String {
        var url = URL(fileURLWithPath: file)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }

    /// Where the module for `release` is built and kept.
    public func buildFolder(release: String) -> String { paths.cache + "/kmod/" + release }
    public func modulePath(release: String) -> String { buildFolder(release: release) + "/\(Self.name).ko" }

    /// The headers folder for `release` (a folder with a kbuild Makefile and Module.symvers).
    public func headers(release: String, given: String? = nil, progress: LabProgress = { _ in }) throws(LabError) -> String {
        if let given {
            guard Files.exists(given + "/Makefile") else {
                throw .ingredientMissing(path: given + "/Makefile", purpose: "kernel headers for \(release) (--headers)")
            }
            return given
        }
        for candidate in ["/lib/modules/\(release)/build", "/usr/src/linux-headers-\(release)"]
        where Files.exists(candidate + "/Makefile") && Files.exists(candidate + "/Module.symvers") {
            return candidate
        }
        guard release == Ingredients.kernelRelease else {
            throw .ingredientMissing(path: "/usr/src/linux-headers-\(release)",
                                     purpose: "building the module for \(release) (apt-get install linux-headers-\(release))")
        }
        return try cachedDebianHeaders(progress)
    }

    /// Debian's headers for the lab's kernel, extracted into `<cache>/headers/<release>`.
    private func cachedDebianHeaders(_ progress: LabProgress) throws(LabError) -> String {
        let release = Ingredients.kernelRelease
        let root = paths.cache + "/headers/" + release
        let folder = root + "/usr/src/linux-headers-\(release)"
        let marker = root + "/.suture-verified"
        if Files.exists(marker), Files.exists(folder + "/Module.symvers") { return folder }

        try Files.createDirectory(paths.debs)
        let ingredients = Ingredients(paths: paths)
        var debs: [String] = []
        for spec in Self.headerPackages {
            let parts = spec.split(separator: "=").map(String.init)
            let file = paths.debs + "/\(parts[0])_\(parts[1])_\(parts[0] == "linux-headers-6.1.0-56-common" ? "all" : "amd64").deb"
            if !Files.exists(file) { try ingredients.download([spec], progress) }
            guard Files.exists(file) else { throw .ingredientMissing(path: file, purpose: "kernel headers (apt-get download named it differently)") }
            debs.append(file)
        }
        progress("extracting \(debs.count) header packages into \(root) (dpkg-deb -x)")
        let temporary = root + ".partial-\(getpid())"
        Files.remove(temporary)
        try Files.createDirectory(temporary)
        do {
            for deb in debs { try HostTool.check("dpkg-deb", ["-x", deb, temporary], package: "dpkg", throwing: LabError.self) }
            // The arch folder's Makefile includes the common folder by its absolute installed path;
            // point it at the extracted copy. Every other link in the packages is relative.
            let makefile = temporary + "/usr/src/linux-headers-\(release)/Makefile"
            let common = root + "/usr/src/linux-headers-6.1.0-56-common"
            try Files.writeAtomically(makefile, text: "include \(common)/Makefile\n")
            try Files.writeAtomically(temporary + "/.suture-verified", text: Self.headerPackages.joined(separator: " ") + "\n")
        } catch {
            Files.remove(temporary)
            throw error
        }
        Files.remove(root)
        try Files.createDirectory((root as NSString).deletingLastPathComponent)
        guard rename(temporary, root) == 0 else {
            let code = errno
            Files.remove(temporary)
            throw .io(path: root, operation: "rename extracted headers into place", errno: code)
        }
        return folder
    }

    /// Compiles the module for `release`, signed by `signer` when given (with the headers'
    /// sign-file and CONFIG_MODULE_SIG_HASH); returns the path of `suture.ko`.
    @discardableResult
    public func build(release: String, headers given: String? = nil, compiler: String? = nil,
                      signer: ModuleSigner? = nil, progress: LabProgress = { _ in }) throws(LabError) -> String {
        let sources = [("kmod/suture.c", "kmod/suture.c"), ("kmod/Makefile", "kmod/Makefile"),
                       ("Sources/CShim/include/suture_kmod.h", "Sources/CShim/include/suture_kmod.h")]
        for (source, _) in sources where !Files.exists(sourceRoot + "/" + source) {
            throw .ingredientMissing(path: sourceRoot + "/" + source,
                                     purpose: "the module's sources (set SUTURE_SOURCE_ROOT or --source to the checkout)")
        }
        let headers = try headers(release: release, given: given, progress: progress)
        // Debian builds its kernels with a named gcc (gcc-12 for 6.1); the module must match.
        let cc = compiler ?? (HostTool.find("gcc-12") != nil ? "gcc-12" : "gcc")

        let folder = buildFolder(release: release)
        let tree = folder + "/src"
        // One build at a time per release: concurrent runs (tests, two shells) share this folder.
        try Files.createDirectory(folder)
        let lock = try FileLock(folder + "/build.lock", throwing: LabError.self)
        defer { withExtendedLifetime(lock) {} }
        Files.remove(tree)
        for (source, destination) in sources {
            try Files.createDirectory(((tree + "/" + destination) as NSString).deletingLastPathComponent)
            try Files.writeAtomically(tree + "/" + destination, try Files.read(sourceRoot + "/" + source))
        }
        progress("building \(Self.name).ko for \(release) against \(headers) (CC=\(cc))")
        let started = Date()
        try HostTool.check("make", ["-C", headers, "M=\(tree)/kmod", "CC=\(cc)", "modules"], package: "make",
                           throwing: LabError.self)
        if let signer {
            // Signed in the private build tree, so the cached module is never half signed.
            do {
                let hash = try signer.sign(module: tree + "/kmod/\(Self.name).ko", headers: headers)
                progress("signed with \(signer.key) (certificate \(signer.certificate), \(hash))")
            } catch {
                throw .moduleSigning(error)
            }
        }
        let output = modulePath(release: release)
        try Files.writeAtomically(output, try Files.read(tree + "/kmod/\(Self.name).ko"))
        progress("built \(output) in \(Ingredients.elapsed(since: started))")
        return output
    }
}
