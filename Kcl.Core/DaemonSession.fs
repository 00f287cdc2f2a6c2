module Kcl.Core.DaemonSession

let placeholder = 0
