import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A Debian kernel whose exact source Suture knows, fetched from Debian's archive into the cache:
///
/// - the image package `linux-image-<release>` (its `boot/config-<release>` is the build's config,
///   its `boot/vmlinuz-<release>` gives the build-id), in `kernel/<release>/` (shared with the lab);
/// - the source package at the pinned revision, whose `/usr/src/linux-source-6.1.tar.xz` is
///   unpacked into `kernel-source/<version>/` and prepared there once.
///
/// The revision is pinned because only the same source, config and compiler rebuild Debian's
/// objects byte for byte; a newer revision would diff against code the running kernel lacks.
public struct DebianKernelSource: Sendable {
    public struct Pin: Sendable, Hashable {
        public var release: String
        public var imagePackage: String
        public var sourcePackage: String
        /// Debian revision of both packages (`6.1.192-2`).
        public var version: String
    }

    public static let pins: [Pin] = [
        Pin(release: "6.1.0-56-amd64", imagePackage: "linux-image-6.1.0-56-amd64",
            sourcePackage: "linux-source-6.1", version: "6.1.192-2"),
    ]

    public let pin: Pin
    public let cache: String

    public init(release: String, cache: String) throws(KernelBuildError) {
        guard let pin = Self.pins.first(where: { $0.release == release }) else {
            throw .unknownDebianKernel(release: release, known: Self.pins.map(\.release))
        }
        self.pin = pin
        self.cache = cache
    }

    public var debs: String { cache + "/debs" }
    public var imageRoot: String { cache + "/kernel/" + pin.release }
    public var config: String { imageRoot + "/boot/config-" + pin.release }
    public var vmlinuz: String { imageRoot + "/boot/vmlinuz-" + pin.release }
    /// The image package's modules: the linked modules that run, for judging string edits.
    public var shippedModules: ShippedModules { ShippedModules(modulesRoot: imageRoot + "/lib/modules/" + pin.release) }
    public var sourceRoot: String { cache + "/kernel-source/" + pin.version }
    /// Where the image's build-id is cached.
    public var identityCache: String { cache + "/kernel/" + pin.release + ".build-id" }
    private var sourceMarker: String { sourceRoot + "/.suture/unpacked" }
    private var sourceDeb: String { debs + "/\(pin.sourcePackage)_\(pin.version)_all.deb" }
    private var imageDeb: String { debs + "/\(pin.imagePackage)_\(pin.version)_amd64.deb" }

    /// Downloads and unpacks what is missing; cheap when both are there. Phases are reported as
    /// `download` and `unpack` (skipped with the reason when cached).
    public func ensure(progress: KernelBuildProgress, interruption: BuildInterruption? = nil) throws(KernelBuildError) -> KernelSourceTree {
        try? FileManager.default.createDirectory(atPath: cache + "/kernel-source", withIntermediateDirectories: true)
        let lock = try FileLock(cache + "/kernel-source/.lock", throwing: KernelBuildError.self)
        defer { withExtendedLifetime(lock) {} }

        let imageReady = FileManager.default.fileExists(atPath: config) && FileManager.default.fileExists(atPath: vmlinuz)
        let sourceReady = FileManager.default.fileExists(atPath: sourceMarker)
        var wanted: [(package: String, deb: String)] = []
        if !imageReady, !FileManager.default.fileExists(atPath: imageDeb) { wanted.append((pin.imagePackage, imageDeb)) }
        if !sourceReady, !FileManager.default.fileExists(atPath: sourceDeb) { wanted.append((pin.sourcePackage, sourceDeb)) }
        if wanted.isEmpty {
            progress(.skipped(.download, reason: "packages in \(debs) or already unpacked"))
        } else {
            try download(wanted.map(\.package), progress: progress, interruption: interruption)
        }

        if imageReady && sourceReady {
            progress(.skipped(.unpack, reason: "\(sourceRoot) (linux-source \(pin.version)) and \(imageRoot)"))
            return try KernelSourceTree(root: sourceRoot)
        }
        let started = KernelBuildClock.now
        progress(.started(.unpack, detail: [imageReady ? nil : pin.imagePackage, sourceReady ? nil : pin.sourcePackage]
            .compactMap { $0 }.joined(separator: ", ")))
        if !imageReady { try unpackImage(interruption) }
        if !sourceReady { try unpackSource(interruption) }
        progress(.finished(.unpack, seconds: KernelBuildClock.seconds(since: started), detail: sourceRoot))
        return try KernelSourceTree(root: sourceRoot)
    }

    private func download(_ packages: [String], progress: KernelBuildProgress,
                          interruption: BuildInterruption?) throws(KernelBuildError) {
        try? FileManager.default.createDirectory(atPath: debs, withIntermediateDirectories: true)
        let specs = packages.map { "\($0)=\(pin.version)" }
        progress(.started(.download, detail: "apt-get download " + specs.joined(separator: " ")))
        let started = KernelBuildClock.now
        for (package, spec) in zip(packages, specs) {
            let result = try HostTool.run("apt-get", ["download", spec], in: debs, package: "apt", interruption: interruption,
                                          throwing: KernelBuildError.self)
            guard result.status == 0 else {
                let policy = (try? HostTool.run("apt-cache", ["policy", package], package: "apt",
                                                throwing: KernelBuildError.self))?.output ?? ""
                throw .packageUnavailable(package: package, version: pin.version,
                                          output: result.output.trimmingCharacters(in: .whitespacesAndNewlines),
                                          policy: policy.isEmpty ? "(no output)" : policy.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        progress(.finished(.download, seconds: KernelBuildClock.seconds(since: started), detail: "into \(debs)"))
    }

    /// `dpkg-deb -x` of the image package into a temporary folder renamed into place, so that a
    /// half-extracted tree is never taken for a whole one.
    private func unpackImage(_ interruption: BuildInterruption?) throws(KernelBuildError) {
        let partial = imageRoot + ".partial-\(getpid())"
        try? FileManager.default.removeItem(atPath: partial)
        try makeDirectory(partial)
        do {
            try HostTool.check("dpkg-deb", ["-x", imageDeb, partial], package: "dpkg", interruption: interruption,
                               throwing: KernelBuildError.self)
        } catch {
            try? FileManager.default.removeItem(atPath: partial)
            throw error
        }
        try? FileManager.default.removeItem(atPath: imageRoot)
        guard rename(partial, imageRoot) == 0 else {
            let code = errno
            try? FileManager.default.removeItem(atPath: partial)
            throw .io(path: imageRoot, operation: "rename the extracted image package into place", errno: code)
        }
    }

    /// `dpkg-deb -x` of the source package, then `tar -xf /usr/src/linux-source-6.1.tar.xz` with the
    /// top folder stripped, into a temporary folder renamed into place.
    private func unpackSource(_ interruption: BuildInterruption?) throws(KernelBuildError) {
        let partial = sourceRoot + ".partial-\(getpid())"
        let deb = partial + "-deb"
        try? FileManager.default.removeItem(atPath: partial)
        try? FileManager.default.removeItem(atPath: deb)
        defer { try? FileManager.default.removeItem(atPath: deb) }
        try makeDirectory(partial)
        try makeDirectory(deb)
        do {
            try HostTool.check("dpkg-deb", ["-x", sourceDeb, deb], package: "dpkg", interruption: interruption,
                               throwing: KernelBuildError.self)
            let tarball = deb + "/usr/src/\(pin.sourcePackage).tar.xz"
            guard FileManager.default.fileExists(atPath: tarball) else {
                throw KernelBuildError.notAKernelTree(path: sourceDeb, expected: "/usr/src/\(pin.sourcePackage).tar.xz in the package",
                                                      found: "no such file")
            }
            try HostTool.check("tar", ["-xf", tarball, "-C", partial, "--strip-components=1"], package: "tar",
                               interruption: interruption, throwing: KernelBuildError.self)
            try makeDirectory(partial + "/.suture")
            try Data("\(pin.sourcePackage) \(pin.version)\n".utf8).write(to: URL(fileURLWithPath: partial + "/.suture/unpacked"))
        } catch let error as KernelBuildError {
            try? FileManager.default.removeItem(atPath: partial)
            throw error
        } catch {
            try? FileManager.default.removeItem(atPath: partial)
            throw .io(path: partial + "/.suture/unpacked", operation: "write", errno: EIO)
        }
        try? FileManager.default.removeItem(atPath: sourceRoot)
        guard rename(partial, sourceRoot) == 0 else {
            let code = errno
            try? FileManager.default.removeItem(atPath: partial)
            throw .io(path: sourceRoot, operation: "rename the unpacked source into place", errno: code)
        }
    }

    private func makeDirectory(_ path: String) throws(KernelBuildError) {
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw .io(path: path, operation: "create directory", errno: errno == 0 ? EIO : errno)
        }
    }
}
