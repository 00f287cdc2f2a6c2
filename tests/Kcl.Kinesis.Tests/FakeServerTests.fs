/// Retries, partial PutRecords failures and error messages, against a scripted HTTP server on 127.0.0.1.
module Kcl.Kinesis.Tests.FakeServerTests

open System
open System.Collections.Concurrent
open System.IO
open System.Net
open System.Text
open System.Text.Json
open System.Threading.Tasks
open Xunit
open Kcl.Kinesis
open Kcl.Tests.Shared

/// A request as the server saw it: the target operation, the headers, the JSON body.
type Seen = { Target: string; Authorization: string; ContentType: string; Body: string }

/// Serves each request with `answer` (the 0-based request number and the request) until disposed.
type FakeServer(answer: int -> Seen -> int * string * string) =
    let port = Kinesalite.FreePort()
    let listener = new HttpListener()
    do listener.Prefixes.Add(sprintf "http://127.0.0.1:%d/" port)
    do listener.Start()
    let seen = ConcurrentQueue<Seen>()

    let loop =
        task {
            let mutable count = 0

            try
                while listener.IsListening do
                    let! context = listener.GetContextAsync()
                    use reader = new StreamReader(context.Request.InputStream)
                    let! body = reader.ReadToEndAsync()

                    let request =
                        {
                            Target = context.Request.Headers["X-Amz-Target"]
                            Authorization = context.Request.Headers["Authorization"]
                            ContentType = context.Request.ContentType
                            Body = body
                        }

                    seen.Enqueue request
                    let status, contentType, text = answer count request
                    count <- count + 1
                    context.Response.StatusCode <- status
                    context.Response.ContentType <- contentType
                    let bytes = Encoding.UTF8.GetBytes text
                    do! context.Response.OutputStream.WriteAsync(bytes, 0, bytes.Length)
                    context.Response.Close()
            with
            | :? HttpListenerException
            | :? ObjectDisposedException -> ()
        }

    member _.Endpoint = Uri(sprintf "http://127.0.0.1:%d/" port)
    member _.Seen = List.ofSeq seen

    member this.Client() =
        new KinesisClient(
            KinesisClientOptions(
                Region = "eu-west-1",
                Endpoint = this.Endpoint,
                Credentials = AwsCredentials("AKIDTEST", "secret"),
                MaxAttempts = 4,
                BaseDelay = TimeSpan.FromMilliseconds 5.0
            )
        )

    interface IDisposable with
        member _.Dispose() =
            listener.Stop()
            listener.Close()
            loop.Wait(TimeSpan.FromSeconds 5.0) |> ignore

let json = "application/x-amz-json-1.1"
let summary = """{"StreamDescriptionSummary":{"StreamName":"s","StreamARN":"arn","StreamStatus":"ACTIVE","OpenShardCount":2}}"""
let error kind message = sprintf """{"__type":"%s","message":"%s"}""" kind message

[<Fact>]
let ``requests are signed JSON 1.1 posts naming the operation`` () =
    task {
        use server = new FakeServer(fun _ _ -> 200, json, summary)
        use client = server.Client()
        let! s = client.DescribeStreamSummaryAsync "s"
        Assert.Equal(2, s.OpenShardCount)
        let request = server.Seen.Head
        Assert.Equal("Kinesis_20131202.DescribeStreamSummary", request.Target)
        Assert.Equal(json, request.ContentType)
        Assert.StartsWith("AWS4-HMAC-SHA256 Credential=AKIDTEST/", request.Authorization)
        Assert.Contains("/eu-west-1/kinesis/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=", request.Authorization)
        Assert.Equal("""{"StreamName":"s"}""", request.Body)
    }

[<Fact>]
let ``throttling and 5xx answers are retried until one succeeds`` () =
    task {
        use server =
            new FakeServer(fun n _ ->
                match n with
                | 0 -> 400, json, error "ProvisionedThroughputExceededException" "slow down"
                | 1 -> 503, "text/plain", "unavailable"
                | _ -> 200, json, summary)

        use client = server.Client()
        let! s = client.DescribeStreamSummaryAsync "s"
        Assert.Equal("ACTIVE", s.StreamStatus)
        Assert.Equal(3, server.Seen.Length)
    }

[<Fact>]
let ``records a PutRecords call failed are re-sent and the results keep the entries' order`` () =
    task {
        use server =
            new FakeServer(fun n request ->
                use doc = JsonDocument.Parse request.Body
                let keys = [ for r in doc.RootElement.GetProperty("Records").EnumerateArray() -> r.GetProperty("PartitionKey").GetString() ]

                let results =
                    keys
                    |> List.map (fun k ->
                        if n = 0 && k = "b" then
                            """{"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded"}"""
                        else
                            sprintf """{"ShardId":"shardId-000000000000","SequenceNumber":"%s%d"}""" k n)

                200, json, sprintf """{"FailedRecordCount":%d,"Records":[%s]}""" (if n = 0 then 1 else 0) (String.Join(",", results)))

        use client = server.Client()
        let entries = [| for k in [ "a"; "b"; "c" ] -> { PartitionKey = k; Data = [| 1uy |] } |]
        let! results = client.PutRecordsAsync("s", entries)
        Assert.Equal<string list>([ "a0"; "b1"; "c0" ], results |> Seq.map _.SequenceNumber |> List.ofSeq)
        Assert.Equal(2, server.Seen.Length)
        Assert.Contains("\"PartitionKey\":\"b\"", server.Seen[1].Body)
        Assert.DoesNotContain("\"PartitionKey\":\"a\"", server.Seen[1].Body)
    }

[<Fact>]
let ``a throttled stream fails after the last attempt with the service's error`` () =
    task {
        use server = new FakeServer(fun _ _ -> 400, json, error "ProvisionedThroughputExceededException" "Rate exceeded")
        use client = server.Client()
        let! e = Assert.ThrowsAsync<KinesisException>(fun () -> client.GetRecordsAsync("it", 10) :> Task)
        Assert.Equal("ProvisionedThroughputExceededException", e.ErrorCode)
        Assert.Equal(4, server.Seen.Length)
    }

[<Fact>]
let ``rejected credentials, an expired iterator and a server that is not Kinesis are named`` () =
    task {
        use server =
            new FakeServer(fun n _ ->
                match n with
                | 0 -> 400, json, error "UnrecognizedClientException" "The security token included in the request is invalid."
                | 1 -> 400, json, error "ExpiredIteratorException" "Iterator expired"
                | _ -> 404, "text/html", "<html>Not Found</html>")

        use client = server.Client()
        let! e = Assert.ThrowsAsync<KinesisException>(fun () -> client.ListShardsAsync "s" :> Task)
        Assert.Contains("credentials (from explicit key pair) were rejected", e.Message)
        let! e = Assert.ThrowsAsync<KinesisException>(fun () -> client.GetRecordsAsync("it", 10) :> Task)
        Assert.Equal("ExpiredIteratorException", e.ErrorCode)
        Assert.Contains("iterator has expired", e.Message)
        let! e = Assert.ThrowsAsync<KinesisException>(fun () -> client.ListShardsAsync "s" :> Task)
        Assert.Equal("UnexpectedResponse", e.ErrorCode)
        Assert.Contains("HTTP 404", e.Message)
        Assert.Contains(string server.Endpoint, e.Message)
    }
