/// The register file as a GDB stub describes it in `target.xml` (and the files it includes):
/// every register's byte offset and size in the `g` reply, in document order.
struct RegisterLayout: Sendable, Hashable {
    struct Slot: Sendable, Hashable {
        var offset: Int
        var size: Int
    }

    var architecture: String
    /// Registers in `g` order: name and size in bytes.
    var registers: [(name: String, size: Int)]
    /// The program counter's name (`rip`, `pc`, `eip`).
    var pcName: String

    static func == (a: RegisterLayout, b: RegisterLayout) -> Bool {
        a.architecture == b.architecture && a.pcName == b.pcName
            && a.registers.map(\.name) == b.registers.map(\.name) && a.registers.map(\.size) == b.registers.map(\.size)
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(architecture)
        for r in registers { hasher.combine(r.name); hasher.combine(r.size) }
    }

    /// Every register's place, computed from the order.
    var slots: [String: Slot] {
        var slots: [String: Slot] = [:]
        var offset = 0
        for r in registers {
            slots[r.name] = Slot(offset: offset, size: r.size)
            offset += r.size
        }
        return slots
    }

    var totalSize: Int { registers.reduce(0) { $0 + $1.size } }

    var pc: Slot? { slots[pcName] }

    /// The slots as they are in a `g` reply of `bytes` bytes. QEMU 7.2's x86-64 description lists
    /// ss_base, ds_base and es_base, which its `g` reply does not carry (608 bytes, not 632): when
    /// the sizes disagree and leaving those out makes them agree, they are left out. Nil when the
    /// reply cannot be matched to the description.
    func slots(forReplyBytes bytes: Int) -> [String: Slot]? {
        if totalSize == bytes { return slots }
        let missing: Set<String> = ["ss_base", "ds_base", "es_base"]
        let trimmed = RegisterLayout(architecture: architecture, registers: registers.filter { !missing.contains($0.name) }, pcName: pcName)
        return trimmed.totalSize == bytes ? trimmed.slots : nil
    }

    /// Used when the stub offers no target description: x86-64's `g` layout (QEMU's order for the
    /// system registers after the general ones).
    static let x86_64Fallback = RegisterLayout(
        architecture: "i386:x86-64",
        registers: ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
                    "r15", "rip"].map { ($0, 8) },
        pcName: "rip")

    /// Builds the layout from target description documents (the main one first, includes in order).
    /// `fetch` reads an included file by name. Registers with an explicit `regnum` that breaks the
    /// running order are not supported (nil: fall back).
    static func parse(_ xml: String, fetch: (String) throws(TargetError) -> String) throws(TargetError) -> RegisterLayout? {
        var architecture: String?
        var registers: [(name: String, size: Int)] = []
        func walk(_ document: String, depth: Int) throws(TargetError) -> Bool {
            if architecture == nil, let a = element("architecture", in: document) { architecture = a }
            for tag in tags(in: document) {
                if tag.hasPrefix("xi:include") || tag.hasPrefix("include") {
                    guard depth < 4, let href = attribute("href", in: tag) else { continue }
                    guard try walk(try fetch(href), depth: depth + 1) else { return false }
                } else if tag.hasPrefix("reg ") || tag.hasPrefix("reg\t") {
                    guard let name = attribute("name", in: tag), let bits = attribute("bitsize", in: tag).flatMap({ Int($0) }),
                          bits > 0, bits % 8 == 0 else { continue }
                    if let explicit = attribute("regnum", in: tag).flatMap({ Int($0) }), explicit != registers.count { return false }
                    registers.append((name, bits / 8))
                }
            }
            return true
        }
        guard try walk(xml, depth: 0), let architecture else { return nil }
        let names = Set(registers.map(\.name))
        let pcName = ["rip", "pc", "eip"].first { names.contains($0) } ?? "pc"
        return RegisterLayout(architecture: architecture, registers: registers, pcName: pcName)
    }

    /// The text of `<name>…</name>`.
    static func element(_ name: String, in document: String) -> String? {
        guard let open = document.firstRange(of: "<\(name)>"),
              let close = document[open.upperBound...].firstRange(of: "</\(name)>") else { return nil }
        return String(document[open.upperBound..<close.lowerBound]).trimmingWhitespace()
    }

    /// The inside of every `<…>` tag, in order (comments, declarations and closing tags skipped).
    /// Scans UTF-8 bytes: the markup is ASCII, and Character-wise search made parsing QEMU's 8 KB
    /// description take a millisecond, inside the pause that connecting causes.
    static func tags(in document: String) -> [Substring] {
        var result: [Substring] = []
        let bytes = document.utf8
        var rest = bytes.startIndex
        while let open = bytes[rest...].firstIndex(of: UInt8(ascii: "<")) {
            guard let close = bytes[open...].firstIndex(of: UInt8(ascii: ">")) else { break }
            let start = bytes.index(after: open)
            if let first = bytes[start..<close].first,
               first != UInt8(ascii: "/") && first != UInt8(ascii: "!") && first != UInt8(ascii: "?") {
                result.append(document[start..<close])
            }
            rest = bytes.index(after: close)
        }
        return result
    }

    /// `name="value"` (or single quotes) inside a tag.
    static func attribute(_ name: String, in tag: Substring) -> String? {
        let bytes = tag.utf8
        let key = Array(name.utf8) + [UInt8(ascii: "=")]
        var i = bytes.startIndex
        while i < bytes.endIndex {
            guard bytes[i...].starts(with: key) else {
                i = bytes.index(after: i)
                continue
            }
            let before: UInt8 = i == bytes.startIndex ? UInt8(ascii: " ") : bytes[bytes.index(before: i)]
            let valueStart = bytes.index(i, offsetBy: key.count)
            if before == UInt8(ascii: " ") || before == UInt8(ascii: "\t") || before == UInt8(ascii: "\n"),
               valueStart < bytes.endIndex, let quote = Optional(bytes[valueStart]),
               quote == UInt8(ascii: "\"") || quote == UInt8(ascii: "'") {
                let from = bytes.index(after: valueStart)
                guard let end = bytes[from...].firstIndex(of: quote) else { return nil }
                return String(tag[from..<end])
            }
            i = valueStart
        }
        return nil
    }
}
