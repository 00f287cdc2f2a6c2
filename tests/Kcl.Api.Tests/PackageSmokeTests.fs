module Kcl.Api.Tests.PackageSmokeTests
