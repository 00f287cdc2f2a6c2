/// The daemon's side of one child's session (placeholder; see DaemonSession.fs).
[<RequireQualifiedAccess>]
module Kcl.Core.DaemonSession

/// Placeholder until the daemon side lands.
val placeholder: int
