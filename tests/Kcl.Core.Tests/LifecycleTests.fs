module Kcl.Core.Tests.LifecycleTests

open Xunit
