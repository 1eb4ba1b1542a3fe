/// The KASLR slide: how far the running kernel's image was moved from the addresses it was linked
/// at. Live addresses = reference addresses + slide, for every core-kernel symbol (modules are
/// loaded wherever there is room, so they say nothing about the slide and are left out).
///
/// The same computation gives a process' load bias: a PIE's `nm` addresses against the live ones.
public enum KASLR {
    /// Anchors tried as a cross-check when fewer than two of the given ones are in both lists:
    /// `startup_64`, x86-64's entry code, moves with the image like every core symbol.
    public static let crossCheckAnchors = ["startup_64"]

    /// The page size slides are a multiple of (the kernel moves by 2 MiB, a PIE by pages).
    public static let alignment: UInt64 = 4096

    /// `live − reference` at the anchors (core-kernel symbols, i.e. without a module). Every anchor
    /// found in both lists must agree; the error names each anchor with both addresses when they
    /// do not. Throws when no anchor is in both lists or when the slide is not page-aligned.
    public static func slide(live: SymbolIndex, reference: SymbolIndex,
                             anchors: [String] = ["_text", "_stext"]) throws -> Int64 {
        try anchorSlides(live: live, reference: reference, anchors: anchors)[0].slide
    }

    /// Every anchor found in both lists, checked to agree (at least one, first = first anchor found).
    public static func anchorSlides(live: SymbolIndex, reference: SymbolIndex,
                                    anchors: [String] = ["_text", "_stext"]) throws(SymbolError) -> [SymbolError.AnchorSlide] {
        var slides: [SymbolError.AnchorSlide] = []
        var missingLive: [String] = [], missingReference: [String] = []
        var tried = Set<String>()
        func attempt(_ name: String) throws(SymbolError) {
            guard tried.insert(name).inserted else { return }
            let l = try coreSymbol(name, in: live, list: "live")
            let r = try coreSymbol(name, in: reference, list: "reference")
            if l == nil { missingLive.append(name) }
            if r == nil { missingReference.append(name) }
            if let l, let r { slides.append(.init(name: name, live: l.address, reference: r.address)) }
        }
        for name in anchors { try attempt(name) }
        if slides.count < 2 {
            for name in crossCheckAnchors { try attempt(name) }
        }
        guard let first = slides.first else {
            throw .noAnchor(anchors: anchors, missingInLive: missingLive, missingInReference: missingReference)
        }
        guard slides.allSatisfy({ $0.slide == first.slide }) else { throw .anchorsDisagree(slides) }
        guard first.slide.magnitude % alignment == 0 else { throw .unalignedSlide(first) }
        return slides
    }

    /// The one symbol of this name outside modules, nil when there is none.
    static func coreSymbol(_ name: String, in index: SymbolIndex, list: String) throws(SymbolError) -> SymbolRecord? {
        let core = index.symbols(named: name).filter { $0.module == nil && !$0.isAbsolute }
        guard core.count <= 1 else {
            throw .ambiguousAnchor(name: name, list: list,
                                   candidates: core.enumerated().map { SymbolIndex.candidate(name, $0.offset + 1, $0.element, numbered: true) })
        }
        return core.first
    }
}
