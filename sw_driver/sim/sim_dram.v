// Simulation-only DRAM model for the accelerator's 64-bit master ports.
//
// - Memory: 2**AW 64-bit words in `mem` (the testbench loads and reads it in bulk via VPI).
// - Bandwidth: a token bucket shared by reads and writes; each accepted read request or write
//   beat costs `cfg_rate_den` tokens and `cfg_rate_num` tokens arrive per cycle, so the link
//   carries num/den words per cycle (Eyeriss: 64 bits at 60 MHz vs a 200 MHz core = 3/10).
//   num >= den means one word per cycle.
// - Latency: a read's data returns `cfg_latency` + (random & `cfg_jitter_mask`) cycles after
//   the request, in request order.
// - Backpressure: each cycle, with probability cfg_stall/256, no request or beat is accepted;
//   independently the read-request queue is bounded (64 in flight).
// - Out-of-range addresses set `err_range`: reads return 0, writes are dropped.
module sim_dram #(parameter AW = 22) (
    input  wire        clk,
    input  wire        rst,
    input  wire        rd_req_valid,
    output wire        rd_req_ready,
    input  wire [31:0] rd_req_addr,
    output wire        rd_resp_valid,
    input  wire        rd_resp_ready,
    output wire [63:0] rd_resp_data,
    input  wire        wr_valid,
    output wire        wr_ready,
    input  wire [31:0] wr_addr,
    input  wire [63:0] wr_data,
    input  wire [15:0] cfg_latency,
    input  wire [15:0] cfg_jitter_mask,
    input  wire [15:0] cfg_rate_num,
    input  wire [15:0] cfg_rate_den,
    input  wire [7:0]  cfg_stall,
    input  wire [31:0] cfg_seed,
    output reg         err_range
);
    reg [63:0] mem [0:(1<<AW)-1] /*verilator public_flat_rw*/;

    localparam QD = 64;
    reg [63:0] q_data [0:QD-1];
    reg [63:0] q_due  [0:QD-1];
    reg [6:0]  q_head, q_tail;     // one extra bit to tell full from empty
    reg [63:0] now;
    reg [63:0] last_due;
    reg [31:0] rng;
    reg [31:0] tokens;
    reg        prefer_write;

    wire q_full  = (q_head[5:0] == q_tail[5:0]) && (q_head[6] != q_tail[6]);
    wire q_empty = (q_head == q_tail);
    wire unlimited = cfg_rate_num >= cfg_rate_den;
    wire have_token = unlimited || (tokens >= {16'd0, cfg_rate_den});
    wire stall_now = (rng[7:0] < cfg_stall);
    wire can_xfer = have_token && !stall_now;
    // One transfer per cycle; alternate priority when both are waiting.
    wire pick_write = wr_valid && (!rd_req_valid || prefer_write || q_full);
    assign wr_ready     = can_xfer && pick_write;
    assign rd_req_ready = can_xfer && !pick_write && !q_full;

    assign rd_resp_valid = !q_empty && (q_due[q_head[5:0]] <= now);
    assign rd_resp_data  = q_data[q_head[5:0]];

    // xorshift32
    wire [31:0] x1 = rng ^ (rng << 13);
    wire [31:0] x2 = x1 ^ (x1 >> 17);
    wire [31:0] rng_next = x2 ^ (x2 << 5);

    wire rd_fire = rd_req_valid && rd_req_ready;
    wire wr_fire = wr_valid && wr_ready;
    wire [63:0] due_raw = now + {48'd0, cfg_latency} + {48'd0, (rng[31:16] & cfg_jitter_mask)};
    wire [63:0] due = (due_raw > last_due) ? due_raw : last_due;

    always @(posedge clk) begin
        if (rst) begin
            q_head <= 0; q_tail <= 0; now <= 0; last_due <= 0;
            rng <= (cfg_seed == 0) ? 32'h1234567 : cfg_seed;
            tokens <= 0; prefer_write <= 0; err_range <= 0;
        end else begin
            now <= now + 1;
            rng <= rng_next;
            if (!unlimited) begin
                if (rd_fire || wr_fire)
                    tokens <= tokens + cfg_rate_num - cfg_rate_den;
                else if (tokens < 4 * cfg_rate_den)
                    tokens <= tokens + cfg_rate_num;
            end
            if (wr_fire) begin
                prefer_write <= 1'b0;
                if (wr_addr < (1 << AW)) mem[wr_addr[AW-1:0]] <= wr_data;
                else err_range <= 1'b1;
            end else if (rd_fire) begin
                prefer_write <= 1'b1;
            end
            if (rd_fire) begin
                q_data[q_tail[5:0]] <= (rd_req_addr < (1 << AW)) ? mem[rd_req_addr[AW-1:0]] : 64'd0;
                if (rd_req_addr >= (1 << AW)) err_range <= 1'b1;
                q_due[q_tail[5:0]] <= due;
                last_due <= due;
                q_tail <= q_tail + 1;
            end
            if (rd_resp_valid && rd_resp_ready) q_head <= q_head + 1;
        end
    end
endmodule
