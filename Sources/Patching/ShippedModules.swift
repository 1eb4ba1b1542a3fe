import Foundation

/// The `.ko` files a kernel image package ships, by module name, read from its `modules.order`
/// (the package has no modules.dep: depmod writes it at install time). `suture build` judges an
/// object's string literals with the linked module it is part of (`LinkedModuleStrings`).
public struct ShippedModules: Sendable {
    /// `lib/modules/<release>` of the extracted package.
    public let modulesRoot: String
    private let byName: [String: String]

    public init(modulesRoot: String) {
        self.modulesRoot = modulesRoot
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

    /// The `.ko` of module `name` (`nfs`, `nfs_acl` or `nfs-acl`), when listed and present.
    public func path(ofModule name: String) -> String? {
        guard let path = byName[Self.canonical(name)], FileManager.default.fileExists(atPath: path) else { return nil }
        return path
    }

    /// The kernel treats `-` and `_` in module names alike.
    static func canonical(_ name: String) -> String { name.replacingOccurrences(of: "-", with: "_") }
}
