package services

import (
	"context"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	accountsv1 "github.com/portico-dev/portico/protos/examples/accounts/v1"
)

// accounts is the in-memory AccountService; mu guards byID.
type accounts struct {
	accountsv1.UnimplementedAccountServiceServer

	host string
	mu   sync.Mutex
	byID map[string]*accountsv1.Account
}

// NewAccounts returns an accounts service holding "alice" (paid) and "bob"
// (free). Policies (auth, limits, cache, validation) are declared in
// accounts.proto and enforced by the edge; the service trusts the identity
// metadata the edge sends.
func NewAccounts() accountsv1.AccountServiceServer {
	host, _ := os.Hostname()
	a := &accounts{host: host, byID: map[string]*accountsv1.Account{}}
	for _, acc := range []*accountsv1.Account{
		{Id: "alice", Email: "alice@example.com", DisplayName: "Alice", Plan: "paid", RiskScore: 3},
		{Id: "bob", Email: "bob@example.com", DisplayName: "Bob", Plan: "free", RiskScore: 40},
	} {
		a.byID[acc.Id] = acc
	}
	return a
}

func (a *accounts) GetAccount(_ context.Context, req *accountsv1.GetAccountRequest) (*accountsv1.Account, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	acc, ok := a.byID[req.GetId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "account %q not found", req.GetId())
	}
	return proto.Clone(acc).(*accountsv1.Account), nil
}

func (a *accounts) CreateAccount(_ context.Context, req *accountsv1.CreateAccountRequest) (*accountsv1.Account, error) {
	if req.GetRiskScore() != 0 {
		// The edge clears internal fields: reaching this means it did not.
		return nil, status.Error(codes.InvalidArgument, "risk_score is set by the risk service only")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.byID[req.GetId()]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "account %q already exists", req.GetId())
	}
	acc := &accountsv1.Account{Id: req.GetId(), Email: req.GetEmail(), DisplayName: req.GetDisplayName(), Plan: req.GetPlan(), RiskScore: 50}
	if acc.Plan == "" {
		acc.Plan = "free"
	}
	a.byID[acc.Id] = acc
	return proto.Clone(acc).(*accountsv1.Account), nil
}

func (a *accounts) ListPlans(context.Context, *accountsv1.ListPlansRequest) (*accountsv1.ListPlansResponse, error) {
	return &accountsv1.ListPlansResponse{
		Plans:             []*accountsv1.Plan{{Name: "free"}, {Name: "paid", MonthlyCents: 900}},
		ServedBy:          a.host,
		ServedAtUnixNanos: time.Now().UnixNano(),
	}, nil
}

func (a *accounts) WhoAmI(ctx context.Context, _ *emptypb.Empty) (*accountsv1.WhoAmIResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	out := &accountsv1.WhoAmIResponse{Metadata: map[string]string{}}
	for k, vs := range md {
		if strings.HasPrefix(k, "x-portico-") || strings.HasPrefix(k, "x-forged") {
			out.Metadata[k] = strings.Join(vs, ",")
		}
	}
	return out, nil
}

func (a *accounts) GetQuota(ctx context.Context, _ *accountsv1.GetQuotaRequest) (*accountsv1.Quota, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var sub string
	if v := md.Get("x-portico-subject"); len(v) > 0 {
		sub = v[0]
	}
	return &accountsv1.Quota{Subject: sub}, nil
}

func (a *accounts) Echo(_ context.Context, req *accountsv1.EchoRequest) (*accountsv1.EchoResponse, error) {
	return &accountsv1.EchoResponse{Text: req.GetText()}, nil
}
