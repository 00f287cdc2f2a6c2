/// Fetching from a real HTTP server on 127.0.0.1 (and file://) into a real cache folder.
module Kcl.Bootstrap.Tests.FetchTests

open System
open System.Diagnostics
open System.IO
open System.Threading.Tasks
open Kcl.Bootstrap
open Kcl.Bootstrap.Tests.Helpers
open Xunit

let private noPartials (cache: string) =
    let leftovers = filesUnder cache |> List.filter (fun f -> f.EndsWith ".part")
    Assert.True(List.isEmpty leftovers, sprintf "partial files left: %A" leftovers)

let private single (r: Result<FetchResult, FetchError list>) =
    match r with
    | Error [ e ] -> e
    | other -> failwithf "expected exactly one error, got %A" other

[<Fact>]
let ``A clean fetch downloads all 79 jars of 3.1.3, verifies them and returns them in manifest order`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = release313 ()
    let jars = publishAll repo m
    use server = new RepoServer(repo)
    let cache = dir.Sub "cache"

    let r, events = fetch (settings server.Url cache) m
    let fetched = ok r

    Assert.Equal(79, fetched.Downloaded)
    Assert.Equal<string list>(Classpath.jars Platform.current cache m, fetched.Jars)

    for e in m.Entries do
        let path = Classpath.jarPath Platform.current cache "3.1.3" e.Coordinate
        Assert.Equal<byte[]>(jars[e.Coordinate], File.ReadAllBytes path)
        Assert.Equal(sha1 jars[e.Coordinate], File.ReadAllText(path + ".sha1").Trim())

    Assert.Equal(
        79,
        events
        |> List.filter (function
            | FetchEvent.Verified(_, _, _, false) -> true
            | _ -> false)
        |> List.length
    )

    noPartials cache

[<Fact>]
let ``A warm cache re-verifies every jar and asks the network nothing, even offline`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = release313 ()
    publishAll repo m |> ignore
    let cache = dir.Sub "cache"

    do
        use server = new RepoServer(repo)
        ok (fst (fetch (settings server.Url cache) m)) |> ignore

    // The server is gone: any request would fail.
    let offline =
        { settings (Uri "http://127.0.0.1:9/") cache with
            Offline = true
        }

    // How long this takes is measured by the benchmark (bench/ProcessBench, "bootstrap"), not here.
    let warm = ok (fst (fetch offline m))
    Assert.Equal(0, warm.Downloaded)
    Assert.Equal(79, warm.Jars.Length)

    // Online too: the network is not consulted.
    use server = new RepoServer(repo)
    ok (fst (fetch (settings server.Url cache) m)) |> ignore
    Assert.Empty(server.Requests)

[<Fact>]
let ``Offline with a missing jar fails clearly, naming the jar`` () =
    use dir = new TempDir()
    let m = smallManifest 2
    let cache = dir.Sub "cache"

    let r, _ =
        fetch
            { settings (Uri "http://127.0.0.1:9/") cache with
                Offline = true
            }
            m

    match r with
    | Error [ FetchError.MissingOffline _ as a; FetchError.MissingOffline _ ] ->
        Assert.Contains("software.amazon.kinesis:amazon-kinesis-client-multilang:3.1.3", a.Message)
        Assert.Contains("--offline", a.Message)
    | other -> failwithf "expected two MissingOffline errors, got %A" other

[<Fact>]
let ``A corrupted jar is a mismatch naming the jar and both digests, and nothing is kept`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 1
    let c = m.Entries.Head.Coordinate
    let good = jarFor c
    let path = publish repo c good false
    let bad = Array.copy good
    bad[bad.Length / 2] <- bad[bad.Length / 2] ^^^ 0xFFuy
    File.WriteAllBytes(path, bad)
    use server = new RepoServer(repo)
    let cache = dir.Sub "cache"

    let error = single (fst (fetch (settings server.Url cache) m))

    match error with
    | FetchError.ChecksumMismatch(coordinate, _, expected, actual) ->
        Assert.Equal(c, coordinate)
        Assert.Equal(Digest.Sha1(sha1 good), expected)
        Assert.Equal(Digest.Sha1(sha1 bad), actual)
        Assert.Contains(string c, error.Message)
        Assert.Contains(sha1 good, error.Message)
        Assert.Contains(sha1 bad, error.Message)
    | other -> failwithf "expected a checksum mismatch, got %A" other

    Assert.Empty(filesUnder cache)

[<Fact>]
let ``A jar corrupted in the cache is downloaded again, or refused offline`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 3
    let jars = publishAll repo m
    use server = new RepoServer(repo)
    let cache = dir.Sub "cache"
    let first = ok (fst (fetch (settings server.Url cache) m))
    File.WriteAllText(first.Jars[1], "garbage")

    match
        fst (
            fetch
                { settings server.Url cache with
                    Offline = true
                }
                m
        )
    with
    | Error [ FetchError.MissingOffline(c, _, reason) ] ->
        Assert.Equal(m.Entries[1].Coordinate, c)
        Assert.Contains("no longer matches", reason)
    | other -> failwithf "expected MissingOffline, got %A" other

    let again = ok (fst (fetch (settings server.Url cache) m))
    Assert.Equal(1, again.Downloaded)
    Assert.Equal<byte[]>(jars[m.Entries[1].Coordinate], File.ReadAllBytes again.Jars[1])

[<Fact>]
let ``A truncated transfer is detected by its checksum and leaves nothing behind`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 1
    let c = m.Entries.Head.Coordinate
    let jar = jarFor c
    publish repo c jar false |> ignore
    use server = new RepoServer(repo)
    // A consistent but short response: Content-Length matches the half that is sent.
    server.Script(c, "", [ Respond(200, [], jar[.. jar.Length / 2]) ])
    let cache = dir.Sub "cache"

    match single (fst (fetch (settings server.Url cache) m)) with
    | FetchError.ChecksumMismatch _ -> ()
    | other -> failwithf "expected a checksum mismatch, got %A" other

    Assert.Empty(filesUnder cache)

[<Fact>]
let ``A connection dropped mid-body is retried, and when it keeps dropping nothing partial is left`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 2
    let jars = publishAll repo m
    let dropped, recovers = m.Entries[0].Coordinate, m.Entries[1].Coordinate
    use server = new RepoServer(repo)
    server.Script(dropped, "", List.replicate 3 (DropMidBody(jars[dropped], jars[dropped].Length / 2)))
    server.Script(recovers, "", [ DropMidBody(jars[recovers], 10) ])
    let cache = dir.Sub "cache"

    match fst (fetch (settings server.Url cache) m) with
    | Error [ FetchError.Failed(c, _, attempts, _) as e ] ->
        Assert.Equal(dropped, c)
        Assert.Equal(3, attempts)
        Assert.Contains(string dropped, e.Message)
    | other -> failwithf "expected one Failed error, got %A" other

    let droppedPath = Classpath.jarPath Platform.current cache "3.1.3" dropped
    Assert.False(File.Exists droppedPath)
    Assert.Equal<byte[]>(jars[recovers], File.ReadAllBytes(Classpath.jarPath Platform.current cache "3.1.3" recovers))
    noPartials cache

[<Fact>]
let ``HTTP 429 with Retry-After is honoured and then succeeds`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 1
    let c = m.Entries.Head.Coordinate
    publishAll repo m |> ignore
    use server = new RepoServer(repo)
    server.Script(c, "", [ Respond(429, [ "Retry-After", "1" ], [||]) ])
    let cache = dir.Sub "cache"
    let clock = Stopwatch.StartNew()

    let r, events = fetch (settings server.Url cache) m
    ok r |> ignore

    Assert.True(
        clock.Elapsed >= TimeSpan.FromSeconds 0.9,
        sprintf "Retry-After: 1 was not waited for (%O)" clock.Elapsed
    )

    match
        events
        |> List.choose (function
            | FetchEvent.Retrying(_, _, n, delay, reason) -> Some(n, delay, reason)
            | _ -> None)
    with
    | [ 1, delay, reason ] ->
        Assert.Equal(TimeSpan.FromSeconds 1.0, delay)
        Assert.Contains("429", reason)
    | other -> failwithf "expected one retry, got %A" other

    let jarRequests = server.Requests |> List.filter (fun p -> p.EndsWith ".jar")
    Assert.Equal(2, jarRequests.Length)

[<Fact>]
let ``HTTP 500 is retried until the attempts run out, then fails naming the jar and the status`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 1
    let c = m.Entries.Head.Coordinate
    publishAll repo m |> ignore
    use server = new RepoServer(repo)
    server.Script(c, "", List.replicate 3 (Respond(500, [], [||])))
    let cache = dir.Sub "cache"

    match single (fst (fetch (settings server.Url cache) m)) with
    | FetchError.Failed(coordinate, _, 3, reason) as e ->
        Assert.Equal(c, coordinate)
        Assert.Contains("HTTP 500", reason)
        Assert.Contains(string c, e.Message)
    | other -> failwithf "expected Failed after 3 attempts, got %A" other

    Assert.Equal(3, server.Requests |> List.filter (fun p -> p.EndsWith ".jar") |> List.length)
    noPartials cache

[<Fact>]
let ``HTTP 404 is final and names the coordinate`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 2
    publishAll repo m |> ignore

    let missing =
        {
            Coordinate =
                {
                    Group = "com.example"
                    Artifact = "nowhere"
                    Version = "1.0"
                }
            Pinned = None
        }

    use server = new RepoServer(repo)
    let cache = dir.Sub "cache"

    match
        single (
            fst (
                fetch
                    (settings server.Url cache)
                    { m with
                        Entries = m.Entries @ [ missing ]
                    }
            )
        )
    with
    | FetchError.NotFound(c, url) as e ->
        Assert.Equal(missing.Coordinate, c)
        Assert.Contains("com.example:nowhere:1.0", e.Message)
        Assert.EndsWith("com/example/nowhere/1.0/nowhere-1.0.jar.sha1", url)
    | other -> failwithf "expected NotFound, got %A" other

    // Asked once for each checksum, never retried.
    Assert.Equal(2, server.Requests |> List.filter (fun p -> p.Contains "nowhere") |> List.length)

[<Fact>]
let ``A sha256 published beside the jar is preferred over the sha1`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 1
    let c = m.Entries.Head.Coordinate
    let jar = jarFor c
    publish repo c jar true |> ignore
    use server = new RepoServer(repo)
    let cache = dir.Sub "cache"
    let fetched = ok (fst (fetch (settings server.Url cache) m))
    Assert.Equal(sha256 jar, File.ReadAllText(fetched.Jars.Head + ".sha256").Trim())
    Assert.DoesNotContain(server.Requests, fun p -> p.EndsWith ".sha1")

[<Fact>]
let ``Pinned digests are checked without asking the repository for checksums`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 2
    let jars = publishAll repo m

    let pin (e: ManifestEntry) =
        { e with
            Pinned = Some(Digest.Sha256(sha256 jars[e.Coordinate]))
        }

    let pinned =
        { m with
            Entries = m.Entries |> List.map pin
        }

    use server = new RepoServer(repo)
    let cache = dir.Sub "cache"

    ok (fst (fetch (settings server.Url cache) pinned)) |> ignore
    Assert.All(server.Requests, fun p -> Assert.EndsWith(".jar", p))

    let wrong =
        { pinned with
            Entries =
                [
                    { pinned.Entries.Head with
                        Pinned = Some(Digest.Sha256(String('0', 64)))
                    }
                ]
        }

    match single (fst (fetch (settings server.Url (dir.Sub "cache2")) wrong)) with
    | FetchError.ChecksumMismatch(_, _, Digest.Sha256 expected, _) -> Assert.Equal(String('0', 64), expected)
    | other -> failwithf "expected a mismatch against the pin, got %A" other

[<Fact>]
let ``A file:// repository works, and a missing file in it is NotFound`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo with space"
    let m = smallManifest 5
    let jars = publishAll repo m
    let cache = dir.Sub "cache"
    let fetched = ok (fst (fetch (settings (Uri repo) cache) m))
    Assert.Equal(5, fetched.Downloaded)
    Assert.Equal<byte[]>(jars[m.Entries[4].Coordinate], File.ReadAllBytes fetched.Jars[4])

    let missing =
        {
            Coordinate =
                {
                    Group = "com.example"
                    Artifact = "nowhere"
                    Version = "1.0"
                }
            Pinned = None
        }

    match single (fst (fetch (settings (Uri repo) cache) { m with Entries = [ missing ] })) with
    | FetchError.NotFound(c, _) -> Assert.Equal(missing.Coordinate, c)
    | other -> failwithf "expected NotFound, got %A" other

[<Fact>]
let ``A jar downloaded again leaves no digest of the other algorithm behind, so the next run finds it in the cache`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 2
    publishAll repo m |> ignore
    use server = new RepoServer(repo)
    let cache = dir.Sub "cache"
    let first = ok (fst (fetch (settings server.Url cache) m))
    // A SHA-256 digest is read before a SHA-1 one; this one is of other bytes, so the jar no longer matches.
    File.WriteAllText(first.Jars[0] + ".sha256", String('0', 64) + "\n")

    let again = ok (fst (fetch (settings server.Url cache) m))
    Assert.Equal(1, again.Downloaded)
    Assert.False(File.Exists(first.Jars[0] + ".sha256"))

    let third = ok (fst (fetch (settings server.Url cache) m))
    Assert.Equal(0, third.Downloaded)

[<Fact>]
let ``Parallel runs into the same cache folder all succeed with intact jars`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = release313 ()
    let jars = publishAll repo m
    use server = new RepoServer(repo)
    let cache = dir.Sub "cache"

    let runs =
        [
            for _ in 1..4 -> Task.Run(fun () -> fst (fetch (settings server.Url cache) m))
        ]
        |> Array.ofList

    Assert.True(Task.WaitAll(runs |> Array.map (fun t -> t :> Task), TimeSpan.FromSeconds 60.0))

    for run in runs do
        let r = ok run.Result

        for e, path in List.zip m.Entries r.Jars do
            Assert.Equal(sha1 jars[e.Coordinate], sha1 (File.ReadAllBytes path))

    noPartials cache

[<Fact>]
let ``Temporary files left by a killed run are cleaned up once they are old, and never used`` () =
    use dir = new TempDir()
    let repo = dir.Sub "repo"
    let m = smallManifest 1
    let jars = publishAll repo m
    let cache = dir.Sub "cache"
    let jar = Classpath.jarPath Platform.current cache "3.1.3" m.Entries.Head.Coordinate
    Directory.CreateDirectory(Path.GetDirectoryName jar) |> ignore
    let stale = jar + ".0123.part"
    File.WriteAllText(stale, "half a jar")
    File.SetLastWriteTimeUtc(stale, DateTime.UtcNow.AddHours -2.0)
    use server = new RepoServer(repo)
    let fetched = ok (fst (fetch (settings server.Url cache) m))
    Assert.Equal<byte[]>(jars[m.Entries.Head.Coordinate], File.ReadAllBytes fetched.Jars.Head)
    noPartials cache
