import Foundation

/// The `.ko` files of the pinned kernel package in the cache, by module name: where the lab finds
/// the reference object of a module function (`nfs_flock [nfs]` → `kernel/fs/nfs/nfs.ko`).
///
/// Read from the package's `modules.order` (the package ships no modules.dep: depmod makes it at
/// install time, and the lab never installs the package).
public struct ModuleObjects: Sendable {
    /// `lib/modules/<release>` in the extracted package.
    public let modulesRoot: String
    private let byName: [String: String]

    public init(paths: LabPaths = LabPaths(), release: String = Ingredients.kernelRelease) {
        modulesRoot = paths.kernelRoot + "/lib/modules/" + release
        var map: [String: String] = [:]
        if let text = try? String(contentsOfFile: modulesRoot + "/modules.order", encoding: .utf8) {
            for line in text.split(separator: "\n") {
                let relative = line.trimmingCharacters(in: .whitespaces)
                guard relative.hasSuffix(".ko") else { continue }
                let base = relative.split(separator: "/").last.map { String($0.dropLast(3)) } ?? relative
                map[Self.canonical(base)] = modulesRoot + "/" + relative
            }
        }
        byName = map
    }

    /// The `.ko` of module `name` (`nfs`, `nfs_acl` or `nfs-acl`), when the package has it and the file exists.
    public func path(ofModule name: String) -> String? {
        guard let path = byName[Self.canonical(name)], FileManager.default.fileExists(atPath: path) else { return nil }
        return path
    }

    /// Number of modules listed.
    public var count: Int { byName.count }

    /// The kernel treats `-` and `_` in module names alike (kallsyms shows `_`).
    static func canonical(_ name: String) -> String {
        name.replacingOccurrences(of: "-", with: "_")
    }
}
