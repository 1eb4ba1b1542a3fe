/// What the tests compare of GNU objdump's text output.
public enum ObjdumpListing {
    /// Instruction, continuation and relocation lines of an `objdump -d`/`-dr` listing.
    public static func bodyLines(_ text: String) -> [String] {
        text.split(separator: "\n").map(String.init).filter { line in
            if line.hasPrefix("\t\t\t") { return true }
            guard let colon = line.firstIndex(of: ":") else { return false }
            let head = line[..<colon].trimmingCharacters(in: .whitespaces)
            return !head.isEmpty && head.allSatisfy(\.isHexDigit) && line[colon...].hasPrefix(":\t")
        }
    }
}
