import Targets

extension TargetError {
    /// The target was a process that no longer exists.
    var isProcessGone: Bool {
        switch self {
        case .processExited, .noSuchProcess: true
        default: false
        }
    }
}
