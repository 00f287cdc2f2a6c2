module Kcl.Core.Lifecycle

let placeholder = 0
