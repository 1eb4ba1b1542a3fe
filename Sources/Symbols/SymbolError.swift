import ELF

/// Everything that can go wrong reading symbol lists, looking names up, parsing address expressions
/// and computing a KASLR slide. Each message names the file or name, where, what was expected and
/// what was found.
public enum SymbolError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A kallsyms/System.map line does not have the `ADDRESS TYPE NAME[\t[MODULE]]` shape.
    /// `line` and `column` are 1-based.
    case malformedLine(file: String, line: Int, column: Int, expected: String, found: String)
    /// Every address is zero: the kernel hides kallsyms addresses from readers without
    /// CAP_SYSLOG (kernel.kptr_restrict).
    case addressesHidden(file: String, symbols: Int)
    /// The text holds no symbol line at all.
    case noSymbols(file: String)
    /// No symbol has this name (in this module). `elsewhere` lists the same name in other modules.
    case notFound(name: String, module: String?, elsewhere: [String])
    /// Several symbols share the name; each candidate is written `name/N at 0x... [module]`.
    case ambiguous(name: String, module: String?, candidates: [String])
    /// `name/N` with N outside 1...count.
    case ordinalOutOfRange(name: String, ordinal: Int, count: Int)
    /// `name/N [module]` where the N-th symbol of that name is in another module.
    case moduleMismatch(name: String, ordinal: Int, expected: String, found: String?)
    /// An address expression that does not parse; `column` is 1-based.
    case badExpression(text: String, column: Int, expected: String, found: String)
    /// base + offset leaves the 64-bit address space.
    case addressOverflow(expression: String, base: UInt64, offset: Int64)
    /// None of the anchor symbols is in both lists (outside modules).
    case noAnchor(anchors: [String], missingInLive: [String], missingInReference: [String])
    /// The anchors give different slides.
    case anchorsDisagree([AnchorSlide])
    /// The slide is not a multiple of the page size: the two lists are not the same build.
    case unalignedSlide(AnchorSlide)
    /// An anchor name is held by several non-module symbols in one of the lists.
    case ambiguousAnchor(name: String, list: String, candidates: [String])
    /// Reading an ELF file's symbol tables failed.
    case elf(file: String, reason: String)

    /// One anchor symbol's address in both lists and the slide it gives.
    public struct AnchorSlide: Sendable, Hashable, CustomStringConvertible {
        public var name: String
        public var live: UInt64
        public var reference: UInt64
        public var slide: Int64 { Int64(bitPattern: live &- reference) }

        public init(name: String, live: UInt64, reference: UInt64) {
            self.name = name
            self.live = live
            self.reference = reference
        }

        public var description: String {
            "\(name): live \(Hex.address(live)) - reference \(Hex.address(reference)) = \(SymbolError.signedHex(slide))"
        }
    }

    public var description: String {
        switch self {
        case let .malformedLine(file, line, column, expected, found):
            return "\(file):\(line):\(column): expected \(expected), found \(found)"
        case let .addressesHidden(file, symbols):
            return "\(file): all \(symbols) addresses are zero: the kernel hides kallsyms addresses from "
                + "readers without CAP_SYSLOG (kernel.kptr_restrict); read it as root, or set "
                + "`sysctl kernel.kptr_restrict=0`"
        case let .noSymbols(file):
            return "\(file): no symbol lines (expected `ADDRESS TYPE NAME` lines)"
        case let .notFound(name, module, elsewhere):
            var text = "no symbol named \(name)"
            if let module { text += " in [\(module)]" }
            if !elsewhere.isEmpty { text += "; found: " + elsewhere.joined(separator: ", ") }
            return text
        case let .ambiguous(name, module, candidates):
            let scope = module.map { " in [\($0)]" } ?? ""
            return "\(name) is ambiguous\(scope): \(candidates.count) symbols have this name; pick one of:\n  "
                + candidates.joined(separator: "\n  ")
        case let .ordinalOutOfRange(name, ordinal, count):
            return "\(name)/\(ordinal): expected an ordinal in 1...\(count) (there \(count == 1 ? "is 1 symbol" : "are \(count) symbols") named \(name)), found \(ordinal)"
        case let .moduleMismatch(name, ordinal, expected, found):
            return "\(name)/\(ordinal): expected a symbol in [\(expected)], found one in "
                + (found.map { "[\($0)]" } ?? "the core kernel")
        case let .badExpression(text, column, expected, found):
            return "address expression \"\(text)\" column \(column): expected \(expected), found \(found)"
        case let .addressOverflow(expression, base, offset):
            return "\(expression): \(Hex.address(base)) \(offset < 0 ? "-" : "+") \(Hex.address(offset.magnitude)) "
                + "leaves the 64-bit address space"
        case let .noAnchor(anchors, missingInLive, missingInReference):
            var parts: [String] = []
            if !missingInLive.isEmpty { parts.append("missing in the live list: " + missingInLive.joined(separator: ", ")) }
            if !missingInReference.isEmpty { parts.append("missing in the reference: " + missingInReference.joined(separator: ", ")) }
            return "KASLR: expected one of the anchors \(anchors.joined(separator: ", ")) in both lists "
                + "(outside modules), found none: " + parts.joined(separator: "; ")
        case let .anchorsDisagree(slides):
            return "KASLR: the anchors give different slides (the lists are not from the same build):\n  "
                + slides.map(\.description).joined(separator: "\n  ")
        case let .unalignedSlide(anchor):
            return "KASLR: expected a page-aligned slide, found \(anchor) (the lists are not from the same build)"
        case let .ambiguousAnchor(name, list, candidates):
            return "KASLR: anchor \(name) is ambiguous in the \(list) list: " + candidates.joined(separator: ", ")
        case let .elf(file, reason):
            return "\(file): cannot read the symbol tables: \(reason)"
        }
    }

    static func signedHex(_ value: Int64) -> String {
        value < 0 ? "-" + Hex.address(value.magnitude) : Hex.address(UInt64(value))
    }
}
