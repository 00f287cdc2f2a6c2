module Kcl.Core.Tests.DaemonSessionTests

open Xunit
